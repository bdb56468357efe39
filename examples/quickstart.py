"""dbosx quickstart: durable workflows on SQLite with zero setup.

Stage 1 runs the payment example from the docs: the second call with the same workflow ID returns the recorded
result, and the customer is charged once.
Stage 2 starts a five-step order workflow in a child process and kills that process with SIGKILL after step 3.
Stage 3 starts a fresh process, which recovers the workflow and finishes it from its last checkpoint: steps 1-3
are not executed again.

Run it with `make demo` (or `python quickstart.py` in this directory).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from dbos import DBOS, SetWorkflowID

DB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.sqlite")
LEDGER = DB_FILE + ".ledger"
CONFIG = {"name": "quickstart", "system_database_url": f"sqlite:///{DB_FILE}"}


# --- stage 1: the payment example ------------------------------------------------------------------------
@DBOS.workflow()
def process_payment(payment_id: str, amount: float) -> str:
    charge_result = charge_customer(amount)
    send_receipt(payment_id, charge_result)
    return charge_result


@DBOS.transaction()
def charge_customer(amount: float) -> str:
    DBOS.sql_session.execute(sa.text("CREATE TABLE IF NOT EXISTS charges (amount REAL)"))
    DBOS.sql_session.execute(sa.text("INSERT INTO charges (amount) VALUES (:a)"), {"a": amount})
    return "charge_id_123"


@DBOS.step()
def send_receipt(payment_id: str, charge_id: str) -> None:
    print(f"  [step] receipt for {payment_id} sent (charge {charge_id})")


# --- stages 2 and 3: a workflow that survives SIGKILL ----------------------------------------------------
@DBOS.step()
def order_step(n: int) -> str:
    with open(LEDGER, "a") as f:
        f.write(f"step {n} pid {os.getpid()}\n")
    print(f"  [step {n}] done in process {os.getpid()}", flush=True)
    return f"step-{n}"


@DBOS.workflow()
def fulfil_order(order_id: str) -> list[str]:
    results = []
    for n in range(1, 6):
        results.append(order_step(n))
        if n == 3 and os.environ.get("QUICKSTART_CRASH") == "1":
            print("  [crash] SIGKILL right after step 3 was checkpointed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        DBOS.sleep(0.1)
    return results


def stage_payment() -> None:
    print("== Stage 1: idempotent payment ==")
    DBOS(config=CONFIG)  # type: ignore[arg-type]
    DBOS.launch()
    with SetWorkflowID("process-payment-12345"):
        result1 = process_payment("payment-12345", 99.99)
    with SetWorkflowID("process-payment-12345"):
        result2 = process_payment("payment-12345", 99.99)
    assert result1 == result2
    with DBOS_engine_connection() as conn:
        charges = conn.execute(sa.text("SELECT count(*) FROM charges")).scalar_one()
    print(f"  first call -> {result1}, second call -> {result2}; charges recorded: {charges}")
    DBOS.destroy()


def DBOS_engine_connection() -> sa.Connection:
    return sa.create_engine(f"sqlite:///{DB_FILE}").connect()


def run_child(mode: str) -> int:
    env = dict(os.environ, QUICKSTART_CRASH="1" if mode == "crash" else "0")
    return subprocess.run([sys.executable, __file__, mode], env=env).returncode


def child_crash() -> None:
    DBOS(config=CONFIG)  # type: ignore[arg-type]
    DBOS.launch()
    with SetWorkflowID("order-42"):
        fulfil_order("order-42")
    print("  (not reached: the process is killed)")


def child_resume() -> None:
    start = time.monotonic()
    DBOS(config=CONFIG)  # type: ignore[arg-type]
    DBOS.launch()  # recovery of the dead process's workflow starts here, in the background
    result = DBOS.retrieve_workflow("order-42").get_result()
    print(f"  recovered and finished in {time.monotonic() - start:.2f}s: {result}")
    DBOS.destroy()


def main() -> None:
    for path in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", LEDGER):
        if os.path.exists(path):
            os.remove(path)
    stage_payment()
    print("== Stage 2: start a 5-step workflow and kill the process mid-way ==")
    code = run_child("crash")
    print(f"  child process exited with {code} (-9 = SIGKILL)")
    print("== Stage 3: restart; the workflow resumes from its last checkpoint ==")
    run_child("resume")
    with open(LEDGER) as f:
        lines = [line.split()[1] for line in f]
    print(f"  step executions across both processes: {lines}")
    assert sorted(lines) == ["1", "2", "3", "4", "5"], lines
    print("Every step ran exactly once, across a SIGKILL. Done.")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "main"
    {"main": main, "crash": child_crash, "resume": child_resume}[mode]()
