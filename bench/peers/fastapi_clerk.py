"""The peer: FastAPI + fastapi-clerk-auth as its README sets it up, on uvicorn[standard].

Same route and answer shape as GET /api/v1/guards, the same JWKS and issuer as the gateway
(CLERK_JWKS_URL, CLERK_ISSUER). fastapi-clerk-auth verifies every request in full with PyJWT
(it has no verified-token cache) and keeps the JWKS for 300 s.
"""

import os

from fastapi import Depends, FastAPI
from fastapi_clerk_auth import ClerkConfig, ClerkHTTPBearer, HTTPAuthorizationCredentials

clerk_config = ClerkConfig(
    jwks_url=os.environ["CLERK_JWKS_URL"], issuer=os.environ["CLERK_ISSUER"], verify_iss=True
)
clerk_auth_guard = ClerkHTTPBearer(config=clerk_config)
app = FastAPI()


@app.get("/api/v1/guards")
async def list_guards(
    credentials: HTTPAuthorizationCredentials = Depends(clerk_auth_guard),  # noqa: B008
) -> dict:
    return {"services": [{"name": "echo", "circuit": "closed"}]}
