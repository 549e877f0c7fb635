"""The grammar of a request stream's messages as a transition table (spec Section 9).

Each direction of a request stream carries one message. ``TRANSITIONS`` maps
``(state, input)`` to the next state; anything not in the table is forbidden. The same table
checks what this endpoint sends (a LocalProtocolError) and what the peer sends (a remote
error: QS_FRAME_UNEXPECTED, or QS_REQUEST_INCOMPLETE for an early FIN).
"""

from __future__ import annotations

from enum import Enum

from .codes import FrameType
from .messages import OP_DELETE, OP_GET, OP_HEAD, OP_LIST, OP_PUT


class MessageState(Enum):
    """Where a message is in its grammar."""

    REQUEST_START = "REQUEST_START"
    UPLOAD = "UPLOAD"
    GET_START = "GET_START"
    DOWNLOAD = "DOWNLOAD"
    HEAD_START = "HEAD_START"
    CHECKSUMS_ONLY = "CHECKSUMS_ONLY"
    LIST_START = "LIST_START"
    PLAIN_START = "PLAIN_START"
    COMPLETE = "COMPLETE"
    CLOSED = "CLOSED"


class MessageInput(Enum):
    """What can happen next in a message: a frame of a known type, or the FIN."""

    REQUEST = "REQUEST"
    REQUEST_PUT = "REQUEST_PUT"
    RESPONSE = "RESPONSE"
    ERROR = "ERROR"
    LISTING = "LISTING"
    DATA = "DATA"
    CHECKSUMS = "CHECKSUMS"
    TRAILER = "TRAILER"
    SETTINGS = "SETTINGS"
    GOAWAY = "GOAWAY"
    FIN = "FIN"


S = MessageState
I = MessageInput  # noqa: E741

TRANSITIONS: dict[tuple[MessageState, MessageInput], MessageState] = {
    (S.REQUEST_START, I.REQUEST): S.COMPLETE,
    (S.REQUEST_START, I.REQUEST_PUT): S.UPLOAD,
    (S.UPLOAD, I.DATA): S.UPLOAD,
    (S.UPLOAD, I.CHECKSUMS): S.UPLOAD,
    (S.UPLOAD, I.TRAILER): S.COMPLETE,
    (S.UPLOAD, I.FIN): S.CLOSED,
    (S.GET_START, I.RESPONSE): S.DOWNLOAD,
    (S.GET_START, I.ERROR): S.COMPLETE,
    (S.DOWNLOAD, I.CHECKSUMS): S.DOWNLOAD,
    (S.DOWNLOAD, I.DATA): S.DOWNLOAD,
    (S.DOWNLOAD, I.FIN): S.CLOSED,
    (S.HEAD_START, I.RESPONSE): S.CHECKSUMS_ONLY,
    (S.HEAD_START, I.ERROR): S.COMPLETE,
    (S.CHECKSUMS_ONLY, I.CHECKSUMS): S.CHECKSUMS_ONLY,
    (S.CHECKSUMS_ONLY, I.FIN): S.CLOSED,
    (S.LIST_START, I.LISTING): S.COMPLETE,
    (S.LIST_START, I.ERROR): S.COMPLETE,
    (S.PLAIN_START, I.RESPONSE): S.COMPLETE,
    (S.PLAIN_START, I.ERROR): S.COMPLETE,
    (S.COMPLETE, I.FIN): S.CLOSED,
}
"""The message grammar of spec Section 9; anything absent is forbidden."""

START_STATES = frozenset({S.REQUEST_START, S.GET_START, S.HEAD_START, S.LIST_START, S.PLAIN_START})
"""States in which a FIN means the message is incomplete (QS_REQUEST_INCOMPLETE)."""

_INPUT_OF_TYPE = {
    FrameType.REQUEST: I.REQUEST,
    FrameType.RESPONSE: I.RESPONSE,
    FrameType.ERROR: I.ERROR,
    FrameType.LISTING: I.LISTING,
    FrameType.DATA: I.DATA,
    FrameType.CHECKSUMS: I.CHECKSUMS,
    FrameType.TRAILER: I.TRAILER,
    FrameType.SETTINGS: I.SETTINGS,
    FrameType.GOAWAY: I.GOAWAY,
}

_RESPONSE_START = {
    OP_GET: S.GET_START,
    OP_HEAD: S.HEAD_START,
    OP_LIST: S.LIST_START,
    OP_PUT: S.PLAIN_START,
    OP_DELETE: S.PLAIN_START,
}


def input_for_frame_type(frame_type: int, op: str | None = None) -> MessageInput:
    """The table input for a frame of a known type (``op`` of a REQUEST frame)."""
    if frame_type == FrameType.REQUEST and op == OP_PUT:
        return I.REQUEST_PUT
    return _INPUT_OF_TYPE[FrameType(frame_type)]


def response_start_state(op: str) -> MessageState:
    """The state a response message starts in, by the ``op`` of its request.

    An unknown ``op`` can only be answered with ERROR, as PUT and DELETE can: PLAIN_START.
    """
    return _RESPONSE_START.get(op, S.PLAIN_START)


def next_state(state: MessageState, message_input: MessageInput) -> MessageState | None:
    """The state after ``message_input``, or None if the grammar forbids it."""
    return TRANSITIONS.get((state, message_input))
