"""The Function App: registers the blueprints of both renewal paths."""

from __future__ import annotations

import azure.functions as func

from renew_http import bp as renew_http_blueprint
from renew_timer import bp as renew_timer_blueprint
from renew_timer.complete_pending import bp as complete_pending_blueprint

app = func.FunctionApp()
app.register_functions(renew_http_blueprint)
app.register_functions(renew_timer_blueprint)
app.register_functions(complete_pending_blueprint)
