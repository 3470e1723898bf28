"""Every condition reason the operator writes, in one place.

CamelCase, as metav1.Condition wants. The same words name the tier transitions
(status.lastTransition.reason) and the Events about them. Pure: constants only.
"""

from __future__ import annotations

# Ready and Progressing: the spec reconcile (status.py, reconcile.py).
SERVING_TIER_READY = "ServingTierReady"
NO_READY_REPLICAS = "NoReadyReplicas"
INVALID_SPEC = "InvalidSpec"
ROLLING_OUT = "RollingOut"
ROLLOUT_COMPLETE = "RolloutComplete"
RECONCILE_FAILED = "ReconcileFailed"

# Degraded and FailedOver, and the transitions between phases: the failover policy.
GPU_TIER_READY = "GPUTierReady"
GPU_TIER_HEALTHY = "GPUTierHealthy"
GPU_MEMORY_HIGH = "GPUMemoryHigh"
GPU_MEMORY_CRITICAL = "GPUMemoryCritical"
GPU_POD_DEGRADED = "GPUPodDegraded"
GPU_UNSCHEDULABLE = "GPUUnschedulable"
GPU_CRASH_LOOP = "GPUCrashLoop"
NO_READY_GPU_PODS = "NoReadyGPUPods"
METRICS_UNAVAILABLE = "MetricsUnavailable"
RECOVERING = "GPUTierRecovering"
RECOVERED = "GPUTierRecovered"
FALLBACK_DISABLED = "FallbackDisabled"
WAITING_FOR_GPU = "WaitingForGPUTier"
NO_READY_FALLBACK_PODS = "NoReadyFallbackPods"
GPU_HARDWARE_FAULT = "GPUHardwareFault"

# FailedOver when it is False while the fallback tier exists (healing_patches.py).
GPU_TIER_ACTIVE = "GPUTierActive"
BOTH_TIERS_SERVING = "BothTiersServing"

# ModelUpdated and the Events of a model update: the model update driver (model_update.py).
MODEL_CURRENT = "ModelCurrent"
UPDATING_IN_PLACE = "UpdatingInPlace"
ROLLING_UPDATE = "RollingUpdate"
MODEL_ROLLING_BACK = "RollingBack"
MODEL_VALIDATION_FAILED = "ModelValidationFailed"
MODEL_LOAD_FAILED = "ModelLoadFailed"
IN_PLACE_REFUSED_MEMORY = "InPlaceRefusedMemory"
MODEL_SWAPPED = "ModelSwapped"
MODEL_SWAP_FAILED = "ModelSwapFailed"
MODEL_UPDATED = "ModelUpdated"
