"""The console's routes by area, each an APIRouter that `create_console_app` includes:
auth (sign-in, sign-out), queue (the verdict queue), verdicts (one verdict, feedback,
runbooks), incidents, usage, admin (accounts, API keys, audit log)."""
