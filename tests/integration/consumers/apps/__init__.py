"""Consumer apps the consumer tests run in process and as service subprocesses."""
