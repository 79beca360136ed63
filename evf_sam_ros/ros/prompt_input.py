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
        current = node.scheduler.prompts
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
        superseded = node.scheduler.counts.superseded
        changed = node.scheduler.set_prompts(prompts, cmd)
        node.stats.count('commands_superseded', node.scheduler.counts.superseded - superseded)
        self._publish(cmd, accepted=True)
        if not changed:
            node.log.debug(f'prompt command repeated: {prompts}')
        elif prompts:
            node.log.info(f'active prompts: {prompts}' + (f' (intent: {cmd.intent})' if cmd.intent else ''))
        else:
            node.log.info(f'prompts cleared ({text[:40]!r})')

    def _publish(self, cmd: PromptCommand, accepted: bool = False) -> None:
        node = self.node
        if node.outputs is None or not node.scheduler.active:
            return
        if accepted:
            node.outputs.prompt_set(cmd, node.params['score_threshold'])
            if not cmd.targets:
                node.outputs.cleared(cmd, node.last_frame_id)
        else:
            node.outputs.command.publish(cmd)
