{{/*
RBAC rules: exactly voiceops_operator/permissions.py (PERMISSIONS, plus the
matching PEERING_PERMISSIONS entry when replicas > 1), split by scope.
tests/chart/test_chart_rbac.py checks the two stay equal and wildcard-free:
change both together.
*/}}

{{/* Namespaced resources: in the ClusterRole, or in a Role per watched namespace. */}}
{{- define "voiceops.rules.namespaced" -}}
# Watch VoiceServices; kopf patches its finalizer and annotations.
- apiGroups: [voiceops.io]
  resources: [voiceservices]
  verbs: [get, list, watch, patch]
# Status: conditions, replica counts, routing.
- apiGroups: [voiceops.io]
  resources: [voiceservices/status]
  verbs: [get, patch]
# The objects of each VoiceService: tier Deployments, Services, HPAs, PDBs, NetworkPolicy,
# and the ConfigMap holding the model the GPU pods start with.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
# Self-healing observes the tier pods (phase, reasons, restarts, IPs to scrape) and
# replaces a pod whose GPU reports a hardware fault (an XID, a lost GPU).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
# Kubernetes Events for handler outcomes and tier transitions.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- if and (include "voiceops.ha" .) .Values.watchNamespaces }}
# kopf peering, namespaced operator: replicas see each other through KopfPeering.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/* Cluster-scoped resources: always in the ClusterRole. */}}
{{- define "voiceops.rules.cluster" -}}
# kopf discovers the VoiceService CRD and notices it (re)appearing.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
# kopf follows the namespaces it serves.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- if and (include "voiceops.ha" .) (not .Values.watchNamespaces) }}
# kopf peering, cluster-wide operator: replicas see each other through ClusterKopfPeering.
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}
