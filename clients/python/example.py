#!/usr/bin/python3
"""meterd from Python, over gRPC: track with an idempotency key, retry it, send a batch, read the
metrics, and decode the ErrorDetail of a refused call.

Run clients/python/generate.sh first. Configured by the environment:
  METERD_GRPC_ADDR  host:port of the gRPC listener (default 127.0.0.1:50051)
  METERD_KEY        a secret key (required)
  METERD_CUSTOMER   the customer to track for (default: a new one per run)
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.rpc import status_pb2  # noqa: E402
from meterd.v1 import metering_pb2, metering_pb2_grpc, usage_pb2  # noqa: E402


def error_detail(err: grpc.RpcError) -> usage_pb2.ErrorDetail | None:
    """The meterd.v1.ErrorDetail in the grpc-status-details-bin trailer of a failed call, if any."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for any_detail in status.details:
                detail = usage_pb2.ErrorDetail()
                if any_detail.Unpack(detail):
                    return detail
    return None


def main() -> int:
    addr = os.environ.get("METERD_GRPC_ADDR", "127.0.0.1:50051")
    key = os.environ.get("METERD_KEY")
    if not key:
        print("METERD_KEY is not set", file=sys.stderr)
        return 2
    customer = os.environ.get("METERD_CUSTOMER") or f"cus_py_{time.time_ns()}"
    auth = (("authorization", f"Bearer {key}"),)

    with grpc.insecure_channel(addr) as channel:
        meterd = metering_pb2_grpc.MeteringServiceStub(channel)

        # Track with an idempotency key, then retry it: the retry counts nothing and has the same id.
        request = metering_pb2.TrackRequest(
            customer_id=customer, feature_key="api_calls", amount=1, idempotency_key=f"{customer}-req-1"
        )
        for label in ("track", "retry"):
            res = meterd.Track(request, metadata=auth, timeout=10)
            print(
                f"{label}: event_id={res.event_id} decision={usage_pb2.Decision.Name(res.decision)} "
                f"duplicate={str(res.duplicate).lower()} consumed={res.usage.consumed:g}"
            )

        # A batch: one result per event, in order; a bad event fails alone.
        batch = meterd.TrackBatch(
            metering_pb2.TrackBatchRequest(
                events=[
                    metering_pb2.TrackRequest(
                        customer_id=customer, feature_key="api_calls", amount=2, idempotency_key=f"{customer}-req-2"
                    ),
                    metering_pb2.TrackRequest(
                        customer_id=customer, feature_key="storage_gb", amount=0.5, idempotency_key=f"{customer}-req-3"
                    ),
                    metering_pb2.TrackRequest(
                        customer_id=customer, feature_key="no_such_feature", idempotency_key=f"{customer}-req-4"
                    ),
                ]
            ),
            metadata=auth,
            timeout=10,
        )
        for i, result in enumerate(batch.results):
            if result.WhichOneof("outcome") == "tracked":
                t = result.tracked
                print(f"batch[{i}]: tracked decision={usage_pb2.Decision.Name(t.decision)} duplicate={str(t.duplicate).lower()}")
            else:
                e = result.error
                print(f"batch[{i}]: error code={e.code} field={e.field} reason={e.reason}")

        metrics = meterd.GetMetrics(metering_pb2.GetMetricsRequest(customer_id=customer), metadata=auth, timeout=10)
        for m in sorted(metrics.metrics, key=lambda m: m.feature_key):
            limit = "unlimited" if m.unlimited else f"{m.limit:g}"
            print(f"metric[{m.feature_key}]: consumed={m.consumed:g} limit={limit}")

        # A refused call: the status code, and the ErrorDetail from grpc-status-details-bin.
        try:
            meterd.Track(
                metering_pb2.TrackRequest(customer_id=customer, feature_key="no_such_feature"), metadata=auth, timeout=10
            )
            print("refused: the call succeeded", file=sys.stderr)
            return 1
        except grpc.RpcError as err:
            detail = error_detail(err)
            if detail is None:
                print(f"refused: {err.code().name} without an ErrorDetail", file=sys.stderr)
                return 1
            print(f"refused: code={err.code().name} reason={detail.reason} field={detail.field} rule={detail.rule}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
