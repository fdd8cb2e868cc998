"""The chief's oracle server of a distributed search, ending with its workers.

In a distributed Keras Tuner search the chief process serves the oracle to
the workers over gRPC at `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`
until no trial is left. Keras Tuner's own server
(`keras_tuner.src.distribute.oracle_chief.start_server`) looks every 20 s
whether the last worker has left once one was told to stop, so a chief
lingered up to 20 s (a two-worker test search took 29 or 57 s). `serve` is
that server, looking every `POLL_SECONDS`.
"""

import os
import time
from concurrent import futures

import grpc
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief

POLL_SECONDS = 0.5


def serve(oracle):
    """Answers the workers' requests to `oracle` until one was told to stop
    and none has a trial or is still registered (`oracle_chief.exit_chief`)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(
        f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(POLL_SECONDS)
    finally:
        server.stop(grace=None)
