"""The local stack (Kafka, schema registry), deployment files, Grafana and Prometheus."""
