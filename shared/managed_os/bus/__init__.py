"""The event bus: one protocol, two backends (Kafka via aiokafka, in-process)."""

from managed_os.bus.protocol import EventBus, EventHandler, Subscription

__all__ = ["EventBus", "EventHandler", "Subscription"]
