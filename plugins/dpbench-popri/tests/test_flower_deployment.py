"""POPri on Flower's deployment engine: a SuperLink and two SuperNodes as processes of their own."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpbench.runner import Runner
from dpbench.suite import load_suite
from dpbench.testing.runs import ledger_lines

DEPLOYED_SUITE = """\
seeds: 1
privacy: {{epsilon: [4], delta: 1e-3, accountant: rdp}}
datasets:
  sotu: {{num_clients: 2, max_eval_texts: 20, max_public_texts: 100, max_tokens: 16}}
methods:
  popri: {{model: {model}, rounds: 2, prompts_per_round: 4, samples_per_prompt: 2, reject_rank: 1, max_new_tokens: 8,
          truncate_tokens: 8, final_samples: 4, epochs_per_round: 1, pairs_per_step: 4, score_batch_clients: 1}}
evaluators:
  next_token: {{vocab_size: 512, n_layer: 1, n_embd: 32, n_head: 2, pretrain_steps: 4, pretrain_batch_size: 8,
               train_steps: 2, batch_size: 8, eval_every: 1}}
"""


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _wait_for_port(port: int, seconds: float = 120) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.e2e
def test_flower_deployment_engine_serves_two_popri_rounds(tmp_path, tiny_llama, popri_plugin):
    """A SuperLink and two SuperNodes (one per client) on 127.0.0.1, the run submitted with
    ``flwr run``: two POPri rounds whose ledger is the in-process one (one client per step)."""
    federation = pytest.importorskip("dpbench.federation")  # needs flwr (dpbench[fl])
    path = tmp_path / "deployed.yaml"
    path.write_text(DEPLOYED_SUITE.format(model=tiny_llama))
    local = load_suite(path, runs_dir=tmp_path / "local")
    assert not Runner(local).run().failed
    (spec,) = load_suite(path, ["+runtime=flower"], runs_dir=tmp_path / "deployed").runs

    link, *node_ports = _free_ports(3)  # the SuperLink serves its Fleet, Control and Runtime APIs on one port
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "dpbench"\n\n[superlink.dpbench]\n'
                                      f'address = "127.0.0.1:{link}"\ninsecure = true\n')
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name, *args):
        with (logs / f"{name}-{len(processes)}.log").open("w") as log:  # the child keeps its own handle
            return subprocess.Popen([str(bin_dir / name), *args], env=env, cwd=tmp_path, stdout=log,
                                    stderr=subprocess.STDOUT)

    processes = []
    try:
        processes.append(start("flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
                               "--port", str(link)))
        for index, port in enumerate(node_ports):
            processes.append(start("flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
                                   "--port", str(port), "--node-config", f"partition-id={index}"))
        _wait_for_port(link)
        run_config = (f"suite='{path}' runs-dir='{tmp_path / 'deployed'}' run='{spec.run_id}' "
                      "overrides='+runtime=flower'")
        submitted = subprocess.run([str(bin_dir / "flwr"), "run", str(federation.APP_DIR), "dpbench",
                                    "--run-config", run_config, "--stream"],
                                   env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        folder = tmp_path / "deployed" / "deployed" / spec.run_id
        deadline = time.monotonic() + 60
        while not (folder / "result.json").exists() and time.monotonic() < deadline:
            time.sleep(1)
        assert (folder / "result.json").exists(), "\n".join(
            [submitted.stdout[-3000:], submitted.stderr[-3000:], *[p.read_text()[-3000:] for p in logs.iterdir()]])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    (local_spec,) = local.runs
    ledger = ledger_lines(folder)
    assert [line["key"] for line in ledger] == ["popri-round-0", "popri-round-1"]
    assert ledger == ledger_lines(local.folder / local_spec.run_id)
