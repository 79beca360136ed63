"""Throttled, categorised logging that is safe with rclpy's logger.

rclpy remembers the severity of each logging *call site* on first use and raises
``ValueError: Logger severity cannot be changed between calls`` if the same line later logs at
another severity. So each severity has its own call site here, throttling is done per category
(not per call site), and nothing is logged once the node's context is shut down (the rosout
publisher is gone then; logging would print "Failed to publish log message to rosout").

Severities: WARN for bad input from outside (images, prompts, parameters, timing), ERROR for the
node's own faults (model failures, a dead worker), INFO for state changes.
"""
from __future__ import annotations

import math
import threading
import time

__all__ = ['NodeLog']


class NodeLog:
    def __init__(self, node) -> None:
        self._node = node
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self.last_message: dict[str, str] = {}   # category -> last text (diagnostics, tests)

    def _due(self, category: str, text: str, throttle: float) -> bool:
        now = time.monotonic()
        with self._lock:
            self.last_message[category] = text
            if now - self._last.get(category, -math.inf) < throttle:
                return False
            self._last[category] = now
        return self._node.context.ok()

    def info(self, text: str, category: str = 'info', throttle: float = 0.0) -> None:
        if self._due(category, text, throttle):
            self._node.get_logger().info(text)

    def warn(self, text: str, category: str = 'warn', throttle: float = 5.0) -> None:
        if self._due(category, text, throttle):
            self._node.get_logger().warning(text)

    def error(self, text: str, category: str = 'error', throttle: float = 5.0) -> None:
        if self._due(category, text, throttle):
            self._node.get_logger().error(text)

    def debug(self, text: str) -> None:
        if self._node.context.ok():
            self._node.get_logger().debug(text)
