"""What FastWorker can show today: the wire protocol round trip (the daemons land with issue 3)."""

from __future__ import annotations

import uuid

from fastworker.protocol import decode_arguments, decode_frame, encode_arguments, encode_frame, new_envelope


def main() -> None:
    envelope = new_envelope(correlation_id=1)
    spec = envelope.submit.task
    spec.task_id = str(uuid.uuid4())
    spec.name = "add"
    spec.arguments.CopyFrom(encode_arguments((1, 2), {}))
    frame = encode_frame(envelope)
    decoded = decode_frame(frame)
    args, kwargs = decode_arguments(decoded.submit.task.arguments)
    print(f"encoded a submit of {spec.name}{args} as a {len(frame)}-byte frame and decoded it back")
    print("the control plane, subworkers and dashboard are not built yet: nothing was started or submitted")


if __name__ == "__main__":
    main()
