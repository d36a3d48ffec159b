"""Reading a backend's event stream in tests: the events until it ends or fails."""

from studio.errors import StudioError
from studio.events import ChatDelta


def collect(stream):
    """Events until the stream ends or fails: (events, error or None)."""
    events = []
    try:
        for event in stream:
            events.append(event)
    except StudioError as err:
        return events, err
    return events, None


def text_of(events):
    return "".join(e.text for e in events if isinstance(e, ChatDelta))
