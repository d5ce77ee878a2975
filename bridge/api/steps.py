"""Steps of a run: the messages it wrote, the tool calls it asked for and the file searches it
ran (their results' contents only with `include[]`)."""

from functools import partial

from flask import Blueprint
from sqlalchemy import select

from ..auth import current_user_id, require_user
from ..engines import current_engine
from ..models import RunStep
from ..registry import paginate, run_in_thread, step_in_run, thread_for_user
from ..schemas import (SEARCH_CONTENTS, ListObject, RunStepObject, StepListQuery, StepQuery,
                       run_step_object)
from . import endpoint
from .pages import list_object

bp = Blueprint("steps", __name__, url_prefix="/v1")
bp.before_request(require_user)


@endpoint(bp, "/threads/<thread_id>/runs/<run_id>/steps", "GET", query=StepListQuery,
          response=ListObject[RunStepObject], summary="List run steps")
def list_run_steps(thread_id: str, run_id: str, query: StepListQuery):
    """A page of a run's steps; an active run is brought up to date first."""
    thread = thread_for_user(thread_id, current_user_id())
    run = current_engine().refresh_run(run_in_thread(thread, run_id))
    page = paginate(select(RunStep).where(RunStep.run_pk == run.pk), RunStep, query)
    return list_object(page, partial(run_step_object, thread_id=thread.id, run_id=run.id,
                                     search_contents=SEARCH_CONTENTS in (query.include or ())))


@endpoint(bp, "/threads/<thread_id>/runs/<run_id>/steps/<step_id>", "GET", query=StepQuery,
          response=RunStepObject, summary="Retrieve a run step")
def get_run_step(thread_id: str, run_id: str, step_id: str, query: StepQuery):
    """One step of a run; an active run is brought up to date first."""
    thread = thread_for_user(thread_id, current_user_id())
    run = run_in_thread(thread, run_id)
    step = step_in_run(run, step_id)
    run = current_engine().refresh_run(run)
    return run_step_object(step, thread.id, run.id,
                           search_contents=SEARCH_CONTENTS in (query.include or ()))
