"""A local Kubernetes cluster for tests, benches and the demo: real control plane, double nodes.

Real (``kube_binaries`` builds them from Go modules, ``control_plane`` runs them):
etcd, kube-apiserver, kube-controller-manager and kube-scheduler.

Ours, where no real component can run here (no container runtime):

* ``node_agent``: the nodes. A kubelet and kube-proxy stand-in (TEST DOUBLE) that
  registers Nodes, runs the pods the scheduler binds as local processes
  (``pod_runtime``: probes, restarts, termination), mounts their volumes
  (``pod_volumes``), gives them addresses (``pod_network``: network namespaces as
  root; ``pod_addresses``: loopback otherwise) and proxies Services to the
  EndpointSlices the real controller writes (``service_proxy``);
* ``operator_process``: the real operator as a child process;
* ``failover_cluster``: all of it with a two-tier VoiceService and a fake NVML GPU,
  for failover tests and benchmarks; ``traffic``: real clients under load;
* ``demo``: ``make demo``.

See docs/local-cluster.md.
"""
