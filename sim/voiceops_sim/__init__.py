"""Test doubles for a Kubernetes cluster: an API-server emulator and a simulated kubelet.

NOT Kubernetes. For tests and the local demo where no cluster can run.

API server emulator (``voiceops_sim.apiserver``)::

    from voiceops_sim.apiserver import KubeApiEmulator

    emu = KubeApiEmulator(crd_files=["crds/voiceservice.yaml"], namespaces=["demo"])
    await emu.start(host="127.0.0.1", port=0)   # -> emu.url, e.g. http://127.0.0.1:41234
    emu.write_kubeconfig(path)                  # kopf login_with_kubeconfig and
                                                # kubernetes_asyncio load_kube_config accept it
    emu.ensure_namespace("ns")                  # namespaces must exist before objects in them
    emu.create(obj) / emu.patch(res, name, ns, merge_patch, subresource="status")
    emu.get("deployments", "tts-gpu", "ns")     # copy or None; plural, kind, short name,
    emu.list("pods", "ns", label_selector="a=b")    # or "plural.group" all work
    emu.put_object(obj)                         # raw upsert incl. status, no validation
    emu.delete("voiceservices", "tts", "ns", propagation="Foreground")
    await emu.wait_for(lambda: ..., timeout=10) # re-checked on every change; TimeoutError
    emu.open_watches("voiceservices")           # open watch streams (wait for the operator)
    emu.requests / emu.request_counts(since=t) / emu.write_requests(since=t)
    t = emu.reset_request_log()                 # then count API calls per reconcile
    emu.compact()                               # next watch resume from an old RV: 410
    emu.subscribe(callback)                     # in-process change listener
    await emu.stop()                            # also: ``async with KubeApiEmulator() as emu``

Semantics and limits are listed in ``voiceops_sim.apiserver``'s docstring.
Notable: a CRD's ``openAPIV3Schema`` prunes unknown fields, applies defaults
and validates (422 naming the field); CEL rules run when ``cel-python`` is
installed; strategic merge patch and server-side apply are approximations
(``voiceops_sim.patches``, ``voiceops_sim.apply``); strategic merge patch on a
custom resource is a 415 as on a real cluster; kubernetes_asyncio's
CustomObjectsApi.patch_* needs ``_content_type="application/merge-patch+json"``
for dict bodies (its default is JSON patch, a 400 here and on a real cluster).

Simulated kubelet (``voiceops_sim.kubelet``; controllers + scheduler + kubelet +
a kube-proxy stand-in, in the emulator's process)::

    from voiceops_sim.kubelet import KubeletConfig, SimulatedKubelet, parse_node

    kubelet = SimulatedKubelet(emu, KubeletConfig(
        nodes=[parse_node("sim-gpu-0:1:8"), parse_node("sim-cpu-0:0:16")],  # NAME:GPUS:CPU
        pod_mode="process",          # or "inert": Running/Ready after inert_ready_delay
        time_scale=0.1,              # probe periods, back-off, deadlines x0.1
        image_commands={"voiceops/service": [".../voiceops-service"]},  # the default
        extra_env={}, log_dir=None, resync_seconds=1.0))
    await kubelet.start() ... await kubelet.stop()     # stop kills every pod process
    kubelet.pod_ip(ns, pod); kubelet.pod_log(ns, pod)   # also served as pods/log
    kubelet.service_url(ns, svc)                         # http://127.0.1.N:PORT (process mode)
    kubelet.service_endpoints(ns, svc)                   # ready pod ip:port behind it now
    await kubelet.set_gpu_capacity("sim-gpu-0", 0)       # evicts GPU pods -> Pending
    kubelet.kill_pod_process(ns, pod)                    # SIGKILL: exit 137 -> OOMKilled
    kubelet.crash_pod(ns, pod, exit_code=1)              # inert pods too
    await kubelet.make_unschedulable(ns, pod); kubelet.allow_scheduling(ns, pod)
    kubelet.cordon("sim-gpu-0"); kubelet.set_pod_ready(ns, pod, False)  # inert only

CLI: ``voiceops-sim apiserver --port 0 --crd FILE --kubeconfig OUT`` prints the
URL and serves until SIGTERM; ``voiceops-sim cluster --crd FILE --kubeconfig OUT
[--node NAME:GPUS:CPU]... [--pod-mode process|inert]`` adds the simulated kubelet
and prints each Service's loopback URL as it appears.
"""
