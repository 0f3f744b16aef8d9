"""The bare runtime: a one-function app that imports only `azure.functions` (the cold-start baseline)."""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp()


@app.function_name("ping")
@app.route(route="ping", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def ping(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse('{"status": "ok"}', status_code=200, mimetype="application/json")
