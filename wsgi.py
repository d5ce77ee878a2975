"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from dotenv import find_dotenv, load_dotenv

from bridge import create_app

load_dotenv(find_dotenv(usecwd=True))
app = create_app()
