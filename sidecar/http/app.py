"""The v0 HTTP API as a Quart-Trio app over a running :class:`sidecar.Runtime`.

Route handlers talk to the runtime only through its public async API. The app owns no
background work: the runtime's actors live in nurseries opened by :func:`sidecar.http.serve`
(or by a test), never on ``app.nursery``, so Hypercorn cancelling the app's task group at
shutdown cannot cut a task short.

Hot path (``POST /v0/tasks``): one JSON decode, one pydantic validation, one ``submit_ex``,
and a response built directly as bytes. Returning dicts would go through quart-schema's
``make_response`` wrapper, which builds a fresh ``TypeAdapter`` per response.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pydantic
import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_schema import (
    OpenAPIProvider,
    QuartSchema,
    RequestSchemaValidationError,
    document_request,
    document_response,
    validate_querystring,
)
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import InvalidTask, ShuttingDown, SidecarError, StoreUnavailable, TaskNotFound
from ..models import record_to_wire, run_to_wire
from ..runtime import Runtime, TaskRequest
from .auth import PUBLIC_PATHS, Authenticator, AuthMode
from .schemas import (
    MAX_BATCH,
    MAX_WAIT_SECONDS,
    BatchEntry,
    BatchRequest,
    EmptyBody,
    ErrorBody,
    IdBody,
    ListQuery,
    MetricsText,
    StatusBody,
    TaskRecord,
    TaskRequestBody,
    WaitQuery,
    describe_validation_error,
    parse_task_request,
    to_schedule,
)

__all__ = ["DEFAULT_MAX_BODY", "create_app"]

DEFAULT_MAX_BODY = 1024 * 1024
# A liveness probe must answer well inside a kubelet's default 1 s timeout.
LIVEZ_TIMEOUT = 0.8

log = logging.getLogger("sidecar.http")

_JSON = "application/json"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(value), status=status, content_type=_JSON, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


async def _json_body() -> Any:
    """The request body decoded as JSON, whatever the Content-Type (as the Go sidecar did).

    Raises:
        InvalidTask: the body is not valid JSON.
        RequestEntityTooLarge: the body is over ``MAX_CONTENT_LENGTH``.
    """
    raw = await request.get_data(cache=False)
    if not raw:
        raise InvalidTask("request body must be a JSON object")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidTask(f"invalid JSON: {exc}") from None


class _Provider(OpenAPIProvider):
    """quart-schema's generator, told what it cannot infer from pydantic models:
    empty-bodied probe answers, the text exposition of /v0/metrics, and that request bodies
    are required."""

    def build_response_object(self, model: Any, headers_model: Any) -> tuple[dict, dict]:
        if model is EmptyBody:
            return {"description": EmptyBody.__doc__}, {}
        if model is MetricsText:
            text = {"schema": {"type": "string"}}
            return {"description": MetricsText.__doc__, "content": {"text/plain": text}}, {}
        return super().build_response_object(model, headers_model)

    def build_request_body(self, model: Any, source: Any) -> tuple[dict, dict]:
        body, definitions = super().build_request_body(model, source)
        return {**body, "required": True}, definitions


def create_app(
    rt: Runtime,
    *,
    auth: AuthMode | str | Authenticator = AuthMode.NONE,
    token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> QuartTrio:
    """Build the v0 API app over ``rt``.

    Args:
        rt: an open runtime; the app never closes it.
        auth: ``"none"``, ``"token"`` or ``"trusted-header"`` (or a ready :class:`Authenticator`).
        token: the bearer token for ``token`` mode.
        max_body: request body limit in bytes; larger bodies get a JSON 413.

    Raises:
        ValueError: ``token`` mode without a token, or a non-positive ``max_body``.
    """
    if max_body < 1:
        raise ValueError("max_body must be at least 1 byte")
    authenticator = auth if isinstance(auth, Authenticator) else Authenticator(auth, token)

    app = QuartTrio("sidecar")
    app.config["MAX_CONTENT_LENGTH"] = max_body
    security_schemes: dict[str, Any] | None = None
    if authenticator.mode is AuthMode.TOKEN:
        security_schemes = {"bearer": {"type": "http", "scheme": "bearer"}}
    elif authenticator.mode is AuthMode.TRUSTED_HEADER:
        security_schemes = {
            "remoteUser": {"type": "apiKey", "in_": "header", "name": "X-Remote-User"}
        }
    make_response = app.make_response
    QuartSchema(
        app,
        openapi_path="/v0/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info={"title": "sidecar", "version": "v0"},
        security_schemes=security_schemes,
        security=[{name: []} for name in security_schemes or {}] or None,
        openapi_provider_class=_Provider,
    )
    # Every view returns a ready Response, so quart-schema's make_response wrapper (which
    # converts dict/model return values) only costs time on each request: take it off.
    app.make_response = make_response  # type: ignore[method-assign]
    _register_error_handlers(app, max_body)
    if authenticator.mode is not AuthMode.NONE:
        _register_auth(app, authenticator)

    @app.get("/v0/healthz")
    @document_response(EmptyBody, 200)
    @document_response(EmptyBody, 503)
    async def healthz() -> Response:
        """Readiness: 200 once a ``mark-ready`` task has completed, 503 before."""
        return Response(b"", status=200 if rt.ready else 503)

    @app.get("/v0/startupz")
    @document_response(EmptyBody, 200)
    @document_response(EmptyBody, 503)
    async def startupz() -> Response:
        """Start-up probe: the same gate as ``/v0/healthz``."""
        return Response(b"", status=200 if rt.ready else 503)

    @app.get("/v0/livez")
    @document_response(EmptyBody, 200)
    @document_response(EmptyBody, 503)
    async def livez() -> Response:
        """Liveness: the store actor answers a ping (``?verbose=1`` explains a 503)."""
        verbose = request.args.get("verbose", "") not in ("", "0", "false")
        problem: str | None = None
        with trio.move_on_after(LIVEZ_TIMEOUT) as scope:
            try:
                await rt.ping()
            except SidecarError as exc:
                problem = str(exc) or type(exc).__name__
        if scope.cancelled_caught:
            problem = f"store did not answer within {LIVEZ_TIMEOUT:g}s"
        if problem is None:
            return _json({"status": "ok"}) if verbose else Response(b"", status=200)
        return _error(503, problem) if verbose else Response(b"", status=503)

    @app.get("/v0/status")
    @document_response(StatusBody)
    async def status() -> Response:
        """``Ready`` once ``mark-ready`` has completed, ``Initializing`` before."""
        return _json({"status": "Ready" if rt.ready else "Initializing"})

    @app.get("/v0/metrics")
    @document_response(MetricsText)
    async def metrics() -> Response:
        """Prometheus text exposition of the runtime's metrics."""
        return Response(rt.metrics.render(), status=200, content_type=CONTENT_TYPE_LATEST)

    @app.post("/v0/tasks")
    @document_request(TaskRequestBody)
    @document_response(IdBody, 201)
    @document_response(IdBody, 202)
    @document_response(ErrorBody, 400)
    @document_response(ErrorBody, 413)
    @document_response(ErrorBody, 503)
    async def submit_task() -> Response:
        """Submit a task: 201 when a run starts, 202 when the id deduplicated."""
        body = parse_task_request(await _json_body())
        outcome = await rt.submit_ex(
            body.type,
            body.params,
            id=body.id,
            timeout=body.timeout,
            schedule=to_schedule(body.schedule),
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "task %s",
                "submitted" if outcome.created else "deduplicated",
                extra={"task_id": outcome.id, "task_type": body.type},
            )
        return _json({"id": outcome.id}, 201 if outcome.created else 202)

    @app.post("/v0/tasks/batch")
    @document_request(BatchRequest)
    @document_response(list[BatchEntry])
    @document_response(ErrorBody, 400)
    @document_response(ErrorBody, 413)
    @document_response(ErrorBody, 503)
    async def submit_batch() -> Response:
        """Submit up to 1,000 tasks; all accepted rows are committed in one group commit."""
        data = await _json_body()
        if not isinstance(data, dict):
            raise InvalidTask("body must be a JSON object")
        items = data.get("tasks")
        if not isinstance(items, list):
            raise InvalidTask("tasks must be a JSON array")
        if len(items) > MAX_BATCH:
            raise InvalidTask(f"tasks: at most {MAX_BATCH} per batch (got {len(items)})")
        entries: list[dict[str, Any]] = [{} for _ in items]
        requests: list[TaskRequest] = []
        slots: list[int] = []
        for i, item in enumerate(items):
            try:
                body = parse_task_request(item, prefix=f"tasks[{i}].")
            except InvalidTask as exc:
                entries[i] = {"status": 400, "error": str(exc)}
                continue
            requests.append(
                TaskRequest(
                    body.type,
                    body.params,
                    id=body.id,
                    timeout=body.timeout,
                    schedule=to_schedule(body.schedule),
                )
            )
            slots.append(i)
        outcomes = await rt.submit_many(requests) if requests else []
        for i, outcome in zip(slots, outcomes, strict=True):
            if isinstance(outcome, InvalidTask):
                entries[i] = {"status": 400, "error": str(outcome)}
            elif isinstance(outcome, BaseException):
                # Not bad input (ShuttingDown, StoreUnavailable): fail the request as a whole.
                raise outcome
            else:
                entries[i] = {"id": outcome.id, "status": 201 if outcome.created else 202}
        return _json(entries)

    @app.get("/v0/tasks")
    @validate_querystring(ListQuery)
    @document_response(list[TaskRecord])
    @document_response(ErrorBody, 400)
    async def list_tasks(query_args: ListQuery) -> Response:
        """Task records, newest first; page with ``before=<last id>``."""
        if query_args.before is not None:
            _check_uuid(query_args.before, "before")
        records = await rt.list(
            query_args.limit,
            status=query_args.status,
            type=query_args.type,
            before=query_args.before,
        )
        return _json([record_to_wire(rec) for rec in records])

    @app.get("/v0/tasks/<task_id>")
    @validate_querystring(WaitQuery)
    @document_response(TaskRecord)
    @document_response(ErrorBody, 400)
    @document_response(ErrorBody, 404)
    async def get_task(task_id: str, query_args: WaitQuery) -> Response:
        """One record; ``?wait=SECONDS`` long-polls until it is terminal."""
        if query_args.wait:
            rec = await rt.wait(task_id, timeout=min(query_args.wait, MAX_WAIT_SECONDS))
        else:
            rec = await rt.get(task_id)
            if rec is None:
                raise TaskNotFound(task_id)
        return _json(record_to_wire(rec))

    @app.get("/v0/tasks/<task_id>/runs")
    @document_response(list[dict[str, Any]])
    @document_response(ErrorBody, 404)
    async def task_runs(task_id: str) -> Response:
        """Run history of a schedule (or of a retried task), oldest first."""
        return _json([run_to_wire(run) for run in await rt.runs(task_id)])

    @app.delete("/v0/tasks/<task_id>")
    @document_response(EmptyBody, 204)
    @document_response(ErrorBody, 404)
    @document_response(ErrorBody, 503)
    async def delete_task(task_id: str) -> Response:
        """Cancel a running task / stop a schedule, and delete the record."""
        if not await rt.remove(task_id):
            raise TaskNotFound(task_id)
        log.info("task removed", extra={"task_id": task_id})
        return Response(b"", status=204)

    return app


def _check_uuid(value: str, field: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise InvalidTask(f"{field} must be a task id (a UUID)") from None


def _register_auth(app: QuartTrio, authenticator: Authenticator) -> None:
    challenge = {"WWW-Authenticate": "Bearer"} if authenticator.mode is AuthMode.TOKEN else None

    @app.before_request
    async def require_auth() -> Response | None:
        if request.path in PUBLIC_PATHS:
            return None
        reason = authenticator.check(request.headers)
        if reason is None:
            return None
        return _error(401, f"unauthorized: {reason}", challenge)


def _register_error_handlers(app: QuartTrio, max_body: int) -> None:
    """Every error leaves as JSON ``{"error": ...}``; bad input is 4xx, never 5xx."""

    @app.errorhandler(InvalidTask)
    async def invalid_task(exc: InvalidTask) -> Response:
        return _error(400, str(exc))

    @app.errorhandler(TaskNotFound)
    async def not_found(exc: TaskNotFound) -> Response:
        return _error(404, "task not found")

    @app.errorhandler(ShuttingDown)
    async def shutting_down(exc: ShuttingDown) -> Response:
        return _error(503, str(exc) or "sidecar is shutting down")

    @app.errorhandler(StoreUnavailable)
    async def store_unavailable(exc: StoreUnavailable) -> Response:
        log.warning("store unavailable: %s", exc)
        return _error(503, f"store unavailable: {exc}")

    @app.errorhandler(RequestSchemaValidationError)
    async def schema_error(exc: RequestSchemaValidationError) -> Response:
        cause = exc.validation_error
        if isinstance(cause, pydantic.ValidationError):
            return _error(400, describe_validation_error(cause))
        return _error(400, str(cause) or "invalid request")

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(exc: RequestEntityTooLarge) -> Response:
        # The rest of the body is never read, so this connection cannot carry another
        # request: tell the client to open a new one.
        return _error(
            413, f"request body too large (limit {max_body} bytes)", {"Connection": "close"}
        )

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type",)}
        message = (exc.name or "error").lower()
        return _error(exc.code or 500, message, headers)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        request_id = uuid.uuid4().hex[:16]
        log.error(
            "unhandled error in %s %s (request id %s)",
            request.method,
            request.path,
            request_id,
            exc_info=exc,
            extra={"request_id": request_id},
        )
        return _error(500, f"internal server error (request id {request_id})")
