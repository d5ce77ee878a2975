"""The baseline of bench/overhead.py: a bare Flask app answering one small JSON object."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    """The least a Flask view can do and still answer JSON."""
    return {"object": "hello"}
