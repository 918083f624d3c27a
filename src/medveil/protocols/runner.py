"""``run_task``: a protocol's owner and processor halves exchanging messages in memory,
round after round, until every owner is done.

The bench, the sweeps and ``multicentre`` call it; the command line and the service
run the same halves' steps with the messages on disk between commands. Every message
is checked on its way: it is a :class:`~medveil.protocols.messages.Message` (arrays and
JSON only), from the side it claims, in the round it claims; an owner that keeps
talking past ``max_rounds`` is an error, not a hang.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medveil.errors import ConfigError
from medveil.protocols.base import OwnerHalf, ProcessorHalf, TaskOutcome
from medveil.protocols.messages import OWNER, PROCESSOR, Message
from medveil.timing import StageClock

if TYPE_CHECKING:
    from medveil.budgets import BenchBudget
    from medveil.data.imageset import ImageSet
    from medveil.keys import Key
    from medveil.protocols.base import Protocol

#: A protocol that needs more rounds than this is stuck (federated training runs tens).
MAX_ROUNDS = 10_000


def _checked(message: Any, *, sender: str, where: str) -> Message:
    if not isinstance(message, Message):
        raise TypeError(f"{where} returned a {type(message).__name__}, not a Message")
    if message.sender != sender:
        raise ValueError(f"{where} sent a message as '{message.sender}', not '{sender}'")
    return message


def run_rounds(owners: list[OwnerHalf], processor: ProcessorHalf, *,
               max_rounds: int = MAX_ROUNDS) -> list[list[Message]]:
    """Drive several owners (centres) and one processor until every owner is done.

    Each round, every owner still running has sent one message; the processor answers
    them together (one answer, or None, per owner) and each owner reads its answer and
    sends its next message or finishes. Returns each owner's transcript.
    """
    transcripts: list[list[Message]] = [[] for _ in owners]
    pending: dict[int, Message] = {}
    for i, owner in enumerate(owners):
        pending[i] = _checked(owner.start(), sender=OWNER, where=f"owner {i}'s start")
    rounds = 0
    while pending:
        rounds += 1
        if rounds > max_rounds:
            raise ConfigError(f"the protocol ran past {max_rounds} rounds without finishing")
        order = sorted(pending)
        for i in order:
            transcripts[i].append(pending[i])
        answers = processor.receive([pending[i] for i in order])
        if len(answers) != len(order):
            raise ValueError(f"the processor answered {len(answers)} of {len(order)} messages")
        pending = {}
        for i, answer in zip(order, answers, strict=True):
            if answer is not None:
                transcripts[i].append(_checked(answer, sender=PROCESSOR,
                                               where="the processor"))
            following = owners[i].receive(answer)
            if following is not None:
                pending[i] = _checked(following, sender=OWNER, where=f"owner {i}")
    for i, owner in enumerate(owners):
        if owner.decoded is None:
            raise ValueError(f"owner {i} finished without a decoded outcome")
    return transcripts


def run_task(protocol: Protocol, scheme: Any, data: ImageSet, *, key: Key,
             budget: BenchBudget, seed: int, clock: StageClock | None = None,
             wrong_key: Key | None = None, progress: bool = False) -> TaskOutcome:
    """The owners of ``data`` (one; a multi-centre protocol's several) with ``scheme``
    (fitted) and one processor: the whole task in memory. Returns the decoded outcome,
    the model that made it, the transcript (every owner's, by round), the halves' cost
    figures and, given the bench's ``wrong_key``, the protocol's own
    section (wrong-key checks, texture, encrypted-inference figures)."""
    clock = clock or StageClock()
    owners = protocol.owner_halves(scheme, data, key=key, budget=budget, seed=seed,
                                   clock=clock)
    processor = protocol.processor_half(budget=budget, seed=seed, clock=clock,
                                        progress=progress, params=dict(scheme.params))
    transcripts = run_rounds(owners, processor)
    transcript = sorted((m for t in transcripts for m in t), key=lambda m: m.round)
    owner = owners[0]
    figures = {**processor.figures, **owner.figures}
    section = owner.section(wrong_key=wrong_key) if wrong_key is not None else None
    run_section = protocol.run_section(owners, processor)
    if run_section is not None:
        section = {**(section or {}), **run_section}
    return TaskOutcome(decoded=protocol.combine(owners, data), model=owner.model or processor.model,
                       transcript=transcript, owner=owner, figures=figures, section=section,
                       owners=owners, processor=processor)
