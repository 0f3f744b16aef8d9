"""The Function App: configures telemetry, then registers the blueprints of both renewal paths (the AppViewX one with
its renewal queue), the endpoint check, the Key Vault event path, the certificate inventory and the discovery of the
certificates' consumers."""

from __future__ import annotations

import azure.functions as func

from renew_http import bp as renew_http_blueprint
from renew_http.inventory import bp as inventory_blueprint
from renew_http.plan import bp as plan_blueprint
from renew_http.queued import bp as renew_queue_blueprint
from renew_timer import bp as renew_timer_blueprint
from renew_timer.complete_pending import bp as complete_pending_blueprint
from renew_timer.discover_consumers import bp as discover_consumers_blueprint
from renew_timer.keyvault_events import bp as keyvault_events_blueprint
from renew_timer.plan_renewals import bp as plan_renewals_blueprint
from renew_timer.verify_endpoints import bp as verify_endpoints_blueprint
from shared.core.settings import load_settings
from shared.core.telemetry import configure_telemetry
from shared.notify.install import install_notifications

# Once per process: the redaction guard on logging, and Application Insights when its connection string is set.
configure_telemetry()
# Once per process: Teams/Slack/JSON notifications when NOTIFY_WEBHOOK_URL is set (invalid settings only log an error).
install_notifications(load_settings())

app = func.FunctionApp()
app.register_functions(renew_http_blueprint)
app.register_functions(renew_queue_blueprint)
app.register_functions(renew_timer_blueprint)
app.register_functions(complete_pending_blueprint)
app.register_functions(verify_endpoints_blueprint)
app.register_functions(keyvault_events_blueprint)
app.register_functions(inventory_blueprint)
app.register_functions(plan_blueprint)
app.register_functions(plan_renewals_blueprint)
app.register_functions(discover_consumers_blueprint)
