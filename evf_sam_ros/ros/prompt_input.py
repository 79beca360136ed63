"""The prompt topic: transcript -> command -> checked prompts -> the active prompt set.

``prompt_mode: spoken`` interprets speech-to-text (``evf_sam_ros.commands``: several targets, "stop"
clears, fillers dropped); ``raw`` takes ";"-separated expressions as they are. Either way the
prompts are checked by the loaded model's tokenizer before they replace the active set, and the
outcome is published on ``command`` (latched) so a planner or voice UI can confirm it. A clear
command publishes an empty result at once: never a detection of "stop".
"""
from __future__ import annotations

from rclpy.qos import QoSProfile

from evf_sam_ros.commands import interpret
from evf_sam_ros.errors import InvalidPromptError
from evf_sam_ros.msg import PromptCommand
from evf_sam_ros.prompts import parse_prompt_command, validate_prompts
from evf_sam_ros.ros.transcripts import TranscriptSource

__all__ = ['PromptInput']


class PromptInput:
    def __init__(self, node) -> None:
        self.node = node
        p = node.params
        self.source = TranscriptSource(p['transcript_type'], p['transcript_field'])
        self._last: PromptCommand | None = None   # the last accepted command (republished on activate)

    def subscribe(self, callback_group):
        return self.node.create_subscription(self.source.msg_type, 'prompt', self.on_message,
                                             QoSProfile(depth=10), callback_group=callback_group)

    def on_message(self, msg) -> None:
        text, confidence = self.source.read(msg)
        self.apply(text, confidence=confidence)

    def apply(self, text: str, *, confidence: float | None = None, raw: bool | None = None) -> None:
        """Interpret ``text`` and, if it is accepted, make it the active prompt set."""
        node, p = self.node, self.node.params
        raw = p['prompt_mode'] == 'raw' if raw is None else raw
        cmd = PromptCommand(raw=text)
        cmd.header.stamp = node.get_clock().now().to_msg()   # transcripts often carry no header
        cmd.header.frame_id = node.last_frame_id
        current = node.scheduler.prompts
        limit = p['max_prompts'] * (p['max_prompt_chars'] + 1)
        if len(text) > limit:   # bound the interpreter's work in the input callback group
            node.stats.count('prompts_rejected')
            cmd.action, cmd.targets = 'rejected', current
            cmd.reason = (f'rejected, keeping the previous {len(current)} prompt(s): {len(text)} characters, more '
                          f'than max_prompts x max_prompt_chars = {limit}')
            node.log.warn(f'prompt {text[:80]!r}... {cmd.reason}', 'prompt', 1.0)
            self._publish(cmd)
            return
        if raw and not text and not self.source.is_string_type:
            # an empty field of a speech message is a partial transcript, not "clear"
            cmd.action, cmd.targets, cmd.reason = 'ignore', current, 'empty transcript field'
            self._publish(cmd)
            return
        try:
            if raw:
                prompts = parse_prompt_command(text, delimiter=p['prompt_delimiter'], max_prompts=p['max_prompts'],
                                               max_chars=p['max_prompt_chars'])
                cmd.action = 'set' if prompts else 'clear'
                cmd.reason = f'{len(prompts)} target(s)' if prompts else 'targets cleared'
            else:
                c = interpret(text, delimiter=p['prompt_delimiter'], confidence=confidence,
                              min_confidence=p['min_confidence'])
                cmd.action, cmd.intent, cmd.reason = c.action, c.intent, c.reason
                if c.action == 'ignore':
                    cmd.targets = current
                    node.log.info(f'transcript {text[:80]!r} ignored: {c.reason}', 'transcript', 1.0)
                    self._publish(cmd)
                    return
                wanted = [] if c.action == 'clear' else list(c.targets)
                if c.action == 'add':
                    wanted = current + [t for t in wanted if t not in current]
                prompts = validate_prompts(wanted, max_prompts=p['max_prompts'], max_chars=p['max_prompt_chars'])
            if node.pipeline is not None:
                node.pipeline.check_prompts(prompts)
        except InvalidPromptError as exc:
            node.stats.count('prompts_rejected')
            cmd.action, cmd.targets = 'rejected', current
            cmd.reason = f'rejected, keeping the previous {len(current)} prompt(s): {exc}'
            node.log.warn(f'prompt {text[:80]!r} {cmd.reason}', 'prompt', 1.0)
            self._publish(cmd)
            return
        cmd.targets = prompts
        with node.publish_lock:   # no result of the previous command is published after this one's
            superseded = node.scheduler.counts.superseded
            changed = node.scheduler.set_prompts(prompts, cmd)
            node.stats.count('commands_superseded', node.scheduler.counts.superseded - superseded)
            self._last = cmd
            self._publish(cmd, accepted=True)
        if not changed:
            node.log.debug(f'prompt command repeated: {prompts}')
        elif prompts:
            node.log.info(f'active prompts: {prompts}' + (f' (intent: {cmd.intent})' if cmd.intent else ''))
        else:
            node.log.info(f'prompts cleared ({text[:40]!r})')

    def republish(self) -> None:
        """On activation: the latched command and label_info of prompts accepted while inactive."""
        if self._last is not None:
            self._publish(self._last, accepted=True)

    def _publish(self, cmd: PromptCommand, accepted: bool = False) -> None:
        node = self.node
        with node.publish_lock:   # re-entrant; teardown takes it before destroying the publishers
            outputs = node.outputs
            if outputs is None or not node.scheduler.active:
                return
            if accepted:
                outputs.prompt_set(cmd, node.params['score_threshold'])
                if not cmd.targets:
                    outputs.cleared(cmd, node.last_frame_shape)
            else:
                outputs.command.publish(cmd)
