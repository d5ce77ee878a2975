"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from dotenv import load_dotenv

from bridge import create_app

load_dotenv()
app = create_app()
