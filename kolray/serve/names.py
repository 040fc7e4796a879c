"""The names the Serve application, its deployments and the tools around it agree on.

A leaf module: the application (:mod:`kolray.serve.app`), deploying (:mod:`kolray.serve.deploy`)
and hot reload (:mod:`kolray.serve.reload`) all import it, and it imports none of them.
"""

APP_NAME = "kolray"
API_DEPLOYMENT = "KolrayApi"
MODEL_DEPLOYMENTS = {"token": "TokenModel", "kol": "KolModel"}
DEFAULT_IMPORT_PATH = "kolray.serve.app:app"

ADMIN_OPEN_WARNING = (
    "KOLRAY_API_KEY is not set: the admin routes (POST /v1/admin/reload) are open to anyone who "
    "can reach the HTTP port"
)


class ServeControlError(RuntimeError):
    """The running Serve app cannot be changed as asked; the message says why."""
