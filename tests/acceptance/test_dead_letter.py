"""max_recovery_attempts across real process crashes (01 §10 rule 6): a workflow that kills its process in a
step every time runs 1 + max_recovery_attempts times, then is dead-lettered."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

APP = textwrap.dedent(
    """
    import os, sys, time
    from dbos import DBOS, SetWorkflowID

    url, ledger, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    DBOS(config={"name": "dead-letter-app", "system_database_url": url,
                 "executor_heartbeat_interval_sec": 0.2, "executor_lease_sec": 1.0})

    @DBOS.step()
    def crash() -> None:
        with open(ledger, "a") as f:
            f.write(f"{os.getpid()}\\n")
        os._exit(17)

    @DBOS.workflow(max_recovery_attempts=3)
    def doomed() -> str:
        crash()
        return "unreachable"

    DBOS.launch()
    if mode == "start":
        with SetWorkflowID("doomed-1"):
            doomed()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # recovery runs in the background; the step exits the process
        status = DBOS.get_workflow_status("doomed-1")
        if status is not None and status.status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED":
            print("DEAD_LETTERED", status.recovery_attempts, flush=True)
            break
        time.sleep(0.05)
    DBOS.destroy()
    """
)


def test_crashing_workflow_is_dead_lettered(db_url: str, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    ledger = tmp_path / "ledger"
    codes = []
    for i in range(4):
        mode = "start" if i == 0 else "recover"
        proc = subprocess.run(
            [sys.executable, str(script), db_url, str(ledger), mode],
            capture_output=True,
            text=True,
            timeout=60,
        )
        codes.append(proc.returncode)
    assert codes == [17, 17, 17, 17], codes
    assert len(ledger.read_text().split()) == 4  # first execution plus 3 recoveries
    final = subprocess.run(
        [sys.executable, str(script), db_url, str(ledger), "recover"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert final.returncode == 0, final.stderr
    assert "DEAD_LETTERED" in final.stdout
    assert len(ledger.read_text().split()) == 4  # the 5th dispatch did not run the body

    from dbos import DBOS
    from dbos.error import DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded

    DBOS(config={"name": "dead-letter-app", "system_database_url": db_url})
    DBOS.launch()
    try:
        with pytest.raises(DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded):
            DBOS.retrieve_workflow("doomed-1").get_result()
    finally:
        DBOS.destroy()
