"""The one middleware in front of every ingest route: the checks each request passes, in their order, in one frame.

1. Timing starts first, so the duration histogram sees every answer, refusals included (timing.py).
2. Any failure further in becomes a JSON answer counted by its reason (responses.py).
3. A header value shipper cannot use is refused before anything reads it (headers.py).
4. Over TCP the token is checked; one proved in Authorization goes no further than here (guard.py).
5. Admission: 503 once shutdown begins or past the cap on requests in flight (guard.py).

These were five aiohttp middlewares. Each was a partial and a coroutine of its own, every one of them entered on
each request and passed through again each time the handler resumed (the commit wait resumes it), so the stack
of them cost several microseconds on a single-record request. Here each rule stays a plain function in its own
module and this is only their order. Not responsible for what any route does (routes.py, dropin.py).
"""

from __future__ import annotations

from aiohttp import web

from shipper.ingest.guard import admit, authenticate
from shipper.ingest.headers import check_headers
from shipper.ingest.responses import Handler, Refused, failure_answer
from shipper.ingest.timing import begin, observe


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    timing = begin(request)
    response: web.StreamResponse
    try:
        check_headers(request)
        passed = authenticate(request)
        in_flight = admit(passed)
        try:
            response = await handler(passed)
        finally:
            if in_flight is not None:
                in_flight.leave()
    except Refused as refused:  # answered at the edge or by `commit`, its reason already counted
        response = refused.response
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect, sent by aiohttp as it is: timed all the same
            observe(request, timing, exc.status)
            raise
        response = failure_answer(request, exc)
    except Exception as exc:  # every failure is answered in JSON (responses.py), never with aiohttp's bare 500
        response = failure_answer(request, exc)
    observe(request, timing, response.status)
    return response
