"""dbosx: durable workflows for Python (the DBOS Transact programming model) on SQLite and PostgreSQL."""

from . import error
from ._client import DBOSClient, EnqueueOptions
from ._config import DBOSConfig
from ._context import (
    DBOSContext,
    DBOSContextEnsure,
    DBOSContextSetAuth,
    DuplicationPolicy,
    SetEnqueueOptions,
    SetWorkflowID,
    SetWorkflowTimeout,
)
from ._dbos import DBOS, __version__
from ._dbos_class import DBOSConfiguredInstance
from ._engine.messaging import SendMessage
from ._handles import WorkflowHandle, WorkflowHandleAsync
from ._queues.queue import Queue, QueueRateLimit
from ._queues.stats import QueueStats
from ._serialization import PortableWorkflowError, Serializer
from ._types import (
    ExecutorInfo,
    StepInfo,
    StepStatus,
    VersionInfo,
    WorkflowList,
    WorkflowStatus,
    WorkflowStatusString,
)

__all__ = [
    "DBOS",
    "DBOSClient",
    "DBOSConfig",
    "DBOSConfiguredInstance",
    "DBOSContext",
    "DBOSContextEnsure",
    "DBOSContextSetAuth",
    "DuplicationPolicy",
    "EnqueueOptions",
    "ExecutorInfo",
    "PortableWorkflowError",
    "Queue",
    "QueueRateLimit",
    "QueueStats",
    "SendMessage",
    "Serializer",
    "SetEnqueueOptions",
    "SetWorkflowID",
    "SetWorkflowTimeout",
    "StepInfo",
    "StepStatus",
    "VersionInfo",
    "WorkflowHandle",
    "WorkflowHandleAsync",
    "WorkflowList",
    "WorkflowStatus",
    "WorkflowStatusString",
    "__version__",
    "error",
]
