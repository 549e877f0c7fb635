"""The message grammar table (quicstore.proto.state), walked exhaustively."""

from __future__ import annotations

import itertools

from quicstore.proto.messages import OPERATIONS
from quicstore.proto.state import (
    START_STATES,
    TRANSITIONS,
    MessageInput,
    MessageState,
    next_state,
    response_start_state,
)

# What each message kind may look like, written as sequences (spec Section 9 prose).
GRAMMAR_EXAMPLES = {
    MessageState.REQUEST_START: [
        ["REQUEST", "FIN"],
        ["REQUEST_PUT", "FIN"],
        ["REQUEST_PUT", "DATA", "CHECKSUMS", "DATA", "TRAILER", "FIN"],
    ],
    MessageState.GET_START: [
        ["RESPONSE", "FIN"],
        ["RESPONSE", "CHECKSUMS", "DATA", "DATA", "FIN"],
        ["ERROR", "FIN"],
    ],
    MessageState.HEAD_START: [["RESPONSE", "FIN"], ["RESPONSE", "CHECKSUMS", "CHECKSUMS", "FIN"]],
    MessageState.LIST_START: [["LISTING", "FIN"], ["ERROR", "FIN"]],
    MessageState.PLAIN_START: [["RESPONSE", "FIN"], ["ERROR", "FIN"]],
}


def walk(start: MessageState, inputs: list[str]) -> MessageState | None:
    state: MessageState | None = start
    for name in inputs:
        assert state is not None
        state = next_state(state, MessageInput[name])
        if state is None:
            return None
    return state


def test_examples_are_accepted_and_end_closed() -> None:
    for start, sequences in GRAMMAR_EXAMPLES.items():
        for seq in sequences:
            assert walk(start, seq) is MessageState.CLOSED, (start, seq)


def test_every_state_input_pair_is_defined_or_forbidden() -> None:
    """Walk the whole (state, input) space: every pair is either in the table or forbidden,
    CLOSED accepts nothing, every state but CLOSED accepts FIN unless it is a start state,
    and every state is reachable from a start state."""
    for state, message_input in itertools.product(MessageState, MessageInput):
        result = next_state(state, message_input)
        if state is MessageState.CLOSED:
            assert result is None
        if message_input is MessageInput.FIN and state is not MessageState.CLOSED:
            assert (result is None) == (state in START_STATES), state
        if message_input in (MessageInput.SETTINGS, MessageInput.GOAWAY):
            assert result is None  # control frames never belong to a request stream
    reachable = set(START_STATES)
    frontier = list(START_STATES)
    while frontier:
        state = frontier.pop()
        for message_input in MessageInput:
            nxt = next_state(state, message_input)
            if nxt is not None and nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(MessageState)


def test_every_path_from_a_start_state_can_close() -> None:
    for (_, _), nxt in TRANSITIONS.items():
        seen = {nxt}
        frontier = [nxt]
        closed = nxt is MessageState.CLOSED
        while frontier and not closed:
            s = frontier.pop()
            for i in MessageInput:
                n = next_state(s, i)
                if n is not None and n not in seen:
                    closed = closed or n is MessageState.CLOSED
                    seen.add(n)
                    frontier.append(n)
        assert closed


def test_response_start_state_per_op() -> None:
    assert {op: response_start_state(op) for op in OPERATIONS} == {
        "GET": MessageState.GET_START,
        "HEAD": MessageState.HEAD_START,
        "LIST": MessageState.LIST_START,
        "PUT": MessageState.PLAIN_START,
        "DELETE": MessageState.PLAIN_START,
    }
    assert response_start_state("FROB") is MessageState.PLAIN_START
