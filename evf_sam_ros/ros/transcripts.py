"""The prompt topic's message type, chosen by parameter: ``std_msgs/msg/String`` (field ``data``) by
default, or any message that carries the transcript in a string field, e.g.
``whisper_msgs/msg/Transcription`` (``text``, no header) or ``hri_msgs/msg/LiveSpeech`` (``final``:
partial transcripts leave it empty and are ignored). The type is resolved by name at start-up with
rosidl_runtime_py (part of every ROS 2 install; the default String needs only std_msgs)."""
from __future__ import annotations

__all__ = ['TranscriptSource']


class TranscriptSource:
    def __init__(self, type_name: str, field: str) -> None:
        self.is_string_type = type_name.replace('/msg/', '/') == 'std_msgs/String'
        try:
            if self.is_string_type:   # the default needs nothing beyond std_msgs
                from std_msgs.msg import String as msg_type
            else:
                from rosidl_runtime_py.utilities import get_message
                msg_type = get_message(type_name)
            self.msg_type = msg_type
        except (AttributeError, ModuleNotFoundError, ValueError) as exc:
            hint = ('other types need rosidl_runtime_py (part of every ROS 2 install: source it), or use '
                    'std_msgs/msg/String' if (getattr(exc, 'name', None) or '').startswith('rosidl_runtime_py') else
                    "give a message type as 'package/msg/Type' whose package is installed and sourced")
            raise ValueError(f"transcript_type '{type_name}' cannot be loaded ({exc}); {hint}") from None
        fields = self.msg_type.get_fields_and_field_types()
        if fields.get(field) not in ('string', 'wstring') and not str(fields.get(field, '')).startswith('string<'):
            strings = [n for n, t in fields.items() if t.startswith(('string', 'wstring'))]
            raise ValueError(f"transcript_field '{field}' is not a string field of {type_name} (its string "
                             f"fields: {', '.join(strings) or 'none'})")
        self.field = field
        self.has_confidence = fields.get('confidence') in ('float', 'double')

    def read(self, msg) -> tuple[str, float | None]:
        """(transcript, confidence or None) of one message."""
        conf = float(msg.confidence) if self.has_confidence else None
        return str(getattr(msg, self.field)), conf
