"""The spans of one export request as a tree: ancestors before descendants, and each span's nearest recorded ancestor.

A vendor record links to its parent's record (Freeplay's `parent_id`, Humanloop's `trace_parent_id`), but a span's
direct parent may be a span no vendor records (an HTTP request between an agent and its tool), and the SDK exports
a parent after its children, often in a later request. So links are resolved here, within one request only: walk
up from a span through the spans the request holds until one that was recorded. Planning in `ancestors_first`
order lets a child see whether its parent was recorded (not refused), and puts the parent's rows first, which a
vendor that needs the parent first (Humanloop) relies on. Not responsible for what a span means (genai.py, steps.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from opentelemetry.proto.trace.v1.trace_pb2 import Span

Id = tuple[bytes, bytes]  # (trace id, span id)


class Tree:
    def __init__(self, spans: Sequence[Span]) -> None:
        self._parent: dict[Id, Id] = {
            (span.trace_id, span.span_id): (span.trace_id, span.parent_span_id) for span in spans if span.parent_span_id
        }
        self._limit = len(spans)  # a walk longer than the request holds spans is a cycle (ids an exporter botched)

    def ancestors(self, span: Span) -> Iterator[Id]:
        """The span's ancestors held in the request, nearest first, and then the first one it does not hold."""
        here = self._parent.get((span.trace_id, span.span_id))
        for _ in range(self._limit):
            if here is None:
                return
            yield here
            here = self._parent.get(here)

    def depth(self, span: Span) -> int:
        return sum(1 for _ in self.ancestors(span))

    def nearest(self, span: Span, chosen: Callable[[Id], bool]) -> str | None:
        """The span id (hex) of the nearest ancestor `chosen` says yes to, or None."""
        return next((span_id.hex() for trace_id, span_id in self.ancestors(span) if chosen((trace_id, span_id))), None)


def ancestors_first(spans: Sequence[Span], tree: Tree) -> list[int]:
    """Indexes of `spans`, each after every ancestor of it the request holds (by depth; ties in request order)."""
    return sorted(range(len(spans)), key=lambda index: tree.depth(spans[index]))
