"""Test doubles for a Kubernetes cluster: API-server emulator and simulated kubelet."""
