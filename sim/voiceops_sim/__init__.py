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

CLI: ``voiceops-sim apiserver --port 0 --crd FILE --kubeconfig OUT`` prints the
URL and serves until SIGTERM; ``voiceops-sim cluster ...`` adds the simulated
kubelet (see ``voiceops_sim.kubelet``).
"""
