"""Build a peer's venv from its exact pins (the only rule of the peers that needs the network)."""

import time
from pathlib import Path

from deconflow.logs import script_logging
from deconflow.peers import build_env

with script_logging(snakemake.log[0]) as log:
    peer, pins = snakemake.wildcards.peer, snakemake.input.pins
    env_dir = Path(snakemake.output.stamp).parent.parent  # <peer_env_dir>/<peer>/installed.txt
    start = time.monotonic()
    log.info("building the venv of peer %s from %s in %s/%s/venv (pip output: %s.pip)", peer, pins,
             env_dir, peer, snakemake.log[0])
    build_env(peer, pins, env_dir, log_path=f"{snakemake.log[0]}.pip")
    log.info("environment of peer %s built in %.0f s", peer, time.monotonic() - start)
