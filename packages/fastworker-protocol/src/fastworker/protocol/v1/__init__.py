"""Generated message classes for protocol v1 (see proto/fastworker/protocol/v1/); never edit *_pb2 files."""
