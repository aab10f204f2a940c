"""Generated wire code for the interplay.v1 protobuf package (see proto/interplay/v1).

Do not edit the *_pb2*.py files by hand: run `python proto/generate.py`. The test
tests/test_wire.py fails when they are stale.
"""
