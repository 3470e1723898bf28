"""What the tests share: helpers and the few test doubles, each named for what it is.

Every test folder imports from here (``tests`` is on pytest's ``pythonpath``):

* ``service_process``: a real ``voiceops-service`` process, polling, metrics;
* ``redis_jobs``: a real redis-server and services sharing it (the job API);
* ``model_versions``: model versions derived from the bundled joe voice;
* ``manifests``: the repository root, the examples, VoiceService manifests;
* ``crd_admission``: a VoiceService checked against the CRD as an API server would;
* ``loopback_kubelet``: the one test double of this package, a kubelet whose pods
  are loopback addresses (for driving the operator on a real control plane);
* ``chart``: finding the project's tools, rendering the chart.
"""
