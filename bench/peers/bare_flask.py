"""The ceiling: a bare Flask JSON route, run on the gateway's own gunicorn configuration."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/healthz")
def healthz() -> object:
    return jsonify(status="ok")
