"""RabbitMQ and ws-gateway: the broker connection, consumers and confirmed publishing, the
ws-gateway order-event format and the channel subscription."""
