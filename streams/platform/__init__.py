"""Platform Kafka connectors: conversation events from a contact-centre platform's own cluster."""
