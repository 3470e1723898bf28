/*
 * fake_nvml.c - a TEST DOUBLE for NVIDIA's libnvidia-ml.so.1 (NVML).
 *
 * It is not NVIDIA's library and talks to no GPU. It implements the NVML calls
 * voiceops-service makes through nvidia-ml-py (pynvml) with NVML's C ABI, and
 * answers them from a plain-text state file that a test or a chaos runner
 * writes. The file named by $VOICEOPS_FAKE_NVML_STATE is re-read on every call,
 * so a change takes effect at once. Format (one key=value a line, '#' comments):
 *
 *   fail=0                  1: every call but nvmlErrorString returns
 *                           NVML_ERROR_UNKNOWN (999), nvmlInit included
 *   device_count=1          0..16
 *   driver_version=...      nvmlSystemGetDriverVersion
 *   gpu<N>.name=...         nvmlDeviceGetName
 *   gpu<N>.uuid=GPU-...     nvmlDeviceGetUUID
 *   gpu<N>.memory_total=B   nvmlDeviceGetMemoryInfo(_v2), bytes
 *   gpu<N>.memory_used=B
 *   gpu<N>.utilization_gpu=P     nvmlDeviceGetUtilizationRates, percent
 *   gpu<N>.utilization_memory=P
 *   gpu<N>.ecc_supported=1       0: ECC calls return NVML_ERROR_NOT_SUPPORTED
 *   gpu<N>.ecc_volatile_uncorrected=K   nvmlDeviceGetTotalEccErrors
 *   gpu<N>.ecc_aggregate_uncorrected=K
 *   gpu<N>.ecc_volatile_corrected=K
 *   gpu<N>.ecc_aggregate_corrected=K
 *   gpu<N>.lost=0           1: every call on this device returns
 *                           NVML_ERROR_GPU_IS_LOST (15)
 *   gpu<N>.fail=0           1: every call on this device returns NVML_ERROR_UNKNOWN
 *   gpu<N>.xids=13,79       XID events, an append-only log: an event set that
 *                           registers the device is delivered (by
 *                           nvmlEventSetWait) each entry appended after it
 *                           registered, once. A log shorter than what a set has
 *                           read counts as rewritten: the set reads it anew.
 *
 * Missing keys take defaults (one device; "Fake NVIDIA GPU (voiceops fake
 * NVML)"; an 80 GiB idle GPU; no errors). No variable, or a file that cannot be
 * read: nvmlInit returns NVML_ERROR_DRIVER_NOT_LOADED, and later calls
 * NVML_ERROR_UNKNOWN. Write the file atomically (write a temporary file, then
 * rename it over the old one) so no call reads half of it.
 */

#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

/* nvmlReturn_t values (nvml.h). */
typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

/* Event types (nvml.h). */
#define NVML_EVENT_TYPE_SINGLE_BIT_ECC 0x0000000000000001ULL
#define NVML_EVENT_TYPE_DOUBLE_BIT_ECC 0x0000000000000002ULL
#define NVML_EVENT_TYPE_XID_CRITICAL 0x0000000000000008ULL
#define FAKE_SUPPORTED_EVENTS \
    (NVML_EVENT_TYPE_SINGLE_BIT_ECC | NVML_EVENT_TYPE_DOUBLE_BIT_ECC | NVML_EVENT_TYPE_XID_CRITICAL)

#define NVML_MEMORY_V2_VERSION 0x02000028U

#define MAX_DEVICES 16
#define MAX_XIDS 256
#define TEXT_LEN 96
#define MAX_STATE_BYTES (256 * 1024)
#define STATE_ENV "VOICEOPS_FAKE_NVML_STATE"

typedef struct fake_device {
    unsigned int index;
} *nvmlDevice_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

typedef struct fake_event_set {
    unsigned long long types[MAX_DEVICES]; /* registered event types per device */
    size_t read[MAX_DEVICES];              /* XID log entries already delivered */
} *nvmlEventSet_t;

struct device_state {
    char name[TEXT_LEN];
    char uuid[TEXT_LEN];
    unsigned long long memory_total;
    unsigned long long memory_used;
    unsigned int utilization_gpu;
    unsigned int utilization_memory;
    int ecc_supported;
    unsigned long long ecc[2][2]; /* [errorType: 0 corrected, 1 uncorrected][0 volatile, 1 aggregate] */
    int lost;
    int fail;
    size_t xid_count;
    unsigned long long xids[MAX_XIDS];
};

struct state {
    int fail;
    unsigned int device_count;
    char driver_version[TEXT_LEN];
    struct device_state devices[MAX_DEVICES];
};

static struct fake_device g_devices[MAX_DEVICES];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int g_init_count;

/* ---- the state file ---------------------------------------------------- */

static char *trim(char *text) {
    while (*text != '\0' && isspace((unsigned char)*text)) {
        text++;
    }
    char *end = text + strlen(text);
    while (end > text && isspace((unsigned char)end[-1])) {
        *--end = '\0';
    }
    return text;
}

static unsigned long long parse_number(const char *value) {
    errno = 0;
    char *end = NULL;
    unsigned long long number = strtoull(value, &end, 0);
    if (errno != 0 || end == value) {
        return 0;
    }
    return number;
}

static int parse_flag(const char *value) {
    return strcmp(value, "1") == 0 || strcmp(value, "true") == 0 || strcmp(value, "yes") == 0;
}

static void copy_text(char *target, const char *value) {
    snprintf(target, TEXT_LEN, "%s", value);
}

static void parse_xids(struct device_state *device, char *value) {
    device->xid_count = 0;
    char *save = NULL;
    for (char *token = strtok_r(value, ", \t", &save); token != NULL && device->xid_count < MAX_XIDS;
         token = strtok_r(NULL, ", \t", &save)) {
        device->xids[device->xid_count++] = parse_number(token);
    }
}

static void set_device_key(struct device_state *device, const char *key, char *value) {
    if (strcmp(key, "name") == 0) {
        copy_text(device->name, value);
    } else if (strcmp(key, "uuid") == 0) {
        copy_text(device->uuid, value);
    } else if (strcmp(key, "memory_total") == 0) {
        device->memory_total = parse_number(value);
    } else if (strcmp(key, "memory_used") == 0) {
        device->memory_used = parse_number(value);
    } else if (strcmp(key, "utilization_gpu") == 0) {
        device->utilization_gpu = (unsigned int)parse_number(value);
    } else if (strcmp(key, "utilization_memory") == 0) {
        device->utilization_memory = (unsigned int)parse_number(value);
    } else if (strcmp(key, "ecc_supported") == 0) {
        device->ecc_supported = parse_flag(value);
    } else if (strcmp(key, "ecc_volatile_uncorrected") == 0) {
        device->ecc[1][0] = parse_number(value);
    } else if (strcmp(key, "ecc_aggregate_uncorrected") == 0) {
        device->ecc[1][1] = parse_number(value);
    } else if (strcmp(key, "ecc_volatile_corrected") == 0) {
        device->ecc[0][0] = parse_number(value);
    } else if (strcmp(key, "ecc_aggregate_corrected") == 0) {
        device->ecc[0][1] = parse_number(value);
    } else if (strcmp(key, "lost") == 0) {
        device->lost = parse_flag(value);
    } else if (strcmp(key, "fail") == 0) {
        device->fail = parse_flag(value);
    } else if (strcmp(key, "xids") == 0) {
        parse_xids(device, value);
    } /* unknown keys are ignored: newer writers, older library */
}

static void set_key(struct state *state, const char *key, char *value) {
    if (strcmp(key, "fail") == 0) {
        state->fail = parse_flag(value);
    } else if (strcmp(key, "device_count") == 0) {
        unsigned long long count = parse_number(value);
        state->device_count = count > MAX_DEVICES ? MAX_DEVICES : (unsigned int)count;
    } else if (strcmp(key, "driver_version") == 0) {
        copy_text(state->driver_version, value);
    } else if (strncmp(key, "gpu", 3) == 0 && isdigit((unsigned char)key[3])) {
        char *dot = NULL;
        unsigned long index = strtoul(key + 3, &dot, 10);
        if (dot != NULL && *dot == '.' && index < MAX_DEVICES) {
            set_device_key(&state->devices[index], dot + 1, value);
        }
    }
}

static void set_defaults(struct state *state) {
    memset(state, 0, sizeof(*state));
    state->device_count = 1;
    copy_text(state->driver_version, "580.0.0-voiceops-fake");
    for (unsigned int i = 0; i < MAX_DEVICES; i++) {
        struct device_state *device = &state->devices[i];
        copy_text(device->name, "Fake NVIDIA GPU (voiceops fake NVML)");
        snprintf(device->uuid, TEXT_LEN, "GPU-fa4e0000-0000-0000-0000-%012u", i);
        device->memory_total = 80ULL << 30;
        device->ecc_supported = 1;
    }
}

/* Reads the state file; NVML_SUCCESS or why not. The caller frees *out. */
static nvmlReturn_t load_state(struct state **out) {
    *out = NULL;
    const char *path = getenv(STATE_ENV);
    if (path == NULL || *path == '\0') {
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    char *text = malloc(MAX_STATE_BYTES + 1);
    struct state *state = malloc(sizeof(*state));
    if (text == NULL || state == NULL) {
        free(text);
        free(state);
        fclose(file);
        return NVML_ERROR_MEMORY;
    }
    size_t length = fread(text, 1, MAX_STATE_BYTES, file);
    fclose(file);
    text[length] = '\0';
    set_defaults(state);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char *hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        char *equals = strchr(line, '=');
        if (equals == NULL) {
            continue;
        }
        *equals = '\0';
        set_key(state, trim(line), trim(equals + 1));
    }
    free(text);
    *out = state;
    return NVML_SUCCESS;
}

static int initialized(void) {
    pthread_mutex_lock(&g_lock);
    int result = g_init_count > 0;
    pthread_mutex_unlock(&g_lock);
    return result;
}

/* The state for a library-wide call: NVML_SUCCESS with *out set, or the error. */
static nvmlReturn_t begin(struct state **out) {
    *out = NULL;
    if (!initialized()) {
        return NVML_ERROR_UNINITIALIZED;
    }
    struct state *state = NULL;
    nvmlReturn_t ret = load_state(&state);
    if (ret != NVML_SUCCESS) {
        return ret == NVML_ERROR_MEMORY ? ret : NVML_ERROR_UNKNOWN;
    }
    if (state->fail) {
        free(state);
        return NVML_ERROR_UNKNOWN;
    }
    *out = state;
    return NVML_SUCCESS;
}

static int device_index(nvmlDevice_t device, const struct state *state) {
    if (device < &g_devices[0] || device >= &g_devices[MAX_DEVICES]) {
        return -1;
    }
    int index = (int)(device - &g_devices[0]);
    return (unsigned int)index < state->device_count ? index : -1;
}

/* The state and device for a device call: NVML_SUCCESS with both set, or the error. */
static nvmlReturn_t begin_device(nvmlDevice_t device, struct state **out,
                                 struct device_state **out_device) {
    *out_device = NULL;
    nvmlReturn_t ret = begin(out);
    if (ret != NVML_SUCCESS) {
        return ret;
    }
    int index = device_index(device, *out);
    if (index < 0) {
        ret = NVML_ERROR_INVALID_ARGUMENT;
    } else if ((*out)->devices[index].lost) {
        ret = NVML_ERROR_GPU_IS_LOST;
    } else if ((*out)->devices[index].fail) {
        ret = NVML_ERROR_UNKNOWN;
    }
    if (ret != NVML_SUCCESS) {
        free(*out);
        *out = NULL;
        return ret;
    }
    *out_device = &(*out)->devices[index];
    return NVML_SUCCESS;
}

/* Every device call starts alike: read the state and find the device, or return why
 * not. Declares `state` (to hand to finish()) and `found` (the device's state). */
#define BEGIN_DEVICE(device)                                     \
    struct state *state = NULL;                                  \
    struct device_state *found = NULL;                           \
    do {                                                         \
        nvmlReturn_t begun = begin_device((device), &state, &found); \
        if (begun != NVML_SUCCESS) {                             \
            return begun;                                        \
        }                                                        \
    } while (0)

static nvmlReturn_t finish(struct state *state, nvmlReturn_t ret) {
    free(state);
    return ret;
}

static nvmlReturn_t copy_out(char *target, unsigned int length, const char *value) {
    if (target == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (strlen(value) + 1 > length) {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(target, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

/* ---- init, shutdown, errors, system ------------------------------------ */

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    struct state *state = NULL;
    nvmlReturn_t ret = load_state(&state);
    if (ret != NVML_SUCCESS) {
        return ret;
    }
    ret = state->fail ? NVML_ERROR_UNKNOWN : NVML_SUCCESS;
    free(state);
    if (ret == NVML_SUCCESS) {
        pthread_mutex_lock(&g_lock);
        for (unsigned int i = 0; i < MAX_DEVICES; i++) {
            g_devices[i].index = i;
        }
        g_init_count++;
        pthread_mutex_unlock(&g_lock);
    }
    return ret;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t ret = NVML_SUCCESS;
    if (g_init_count == 0) {
        ret = NVML_ERROR_UNINITIALIZED;
    } else {
        g_init_count--;
    }
    pthread_mutex_unlock(&g_lock);
    return ret;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    struct state *state = NULL;
    nvmlReturn_t ret = begin(&state);
    if (ret != NVML_SUCCESS) {
        return ret;
    }
    return finish(state, copy_out(version, length, state->driver_version));
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    struct state *state = NULL;
    nvmlReturn_t ret = begin(&state);
    if (ret != NVML_SUCCESS) {
        return ret;
    }
    return finish(state, copy_out(version, length, "13.580.0-voiceops-fake"));
}

/* ---- devices ----------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (count == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    struct state *state = NULL;
    nvmlReturn_t ret = begin(&state);
    if (ret != NVML_SUCCESS) {
        return ret;
    }
    *count = state->device_count;
    return finish(state, NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (device == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    struct state *state = NULL;
    nvmlReturn_t ret = begin(&state);
    if (ret != NVML_SUCCESS) {
        return ret;
    }
    if (index >= state->device_count) {
        return finish(state, NVML_ERROR_INVALID_ARGUMENT);
    }
    if (state->devices[index].lost) {
        return finish(state, NVML_ERROR_GPU_IS_LOST);
    }
    *device = &g_devices[index];
    return finish(state, NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    BEGIN_DEVICE(device);
    if (index == NULL) {
        return finish(state, NVML_ERROR_INVALID_ARGUMENT);
    }
    *index = device->index;
    return finish(state, NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    BEGIN_DEVICE(device);
    return finish(state, copy_out(name, length, found->name));
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    BEGIN_DEVICE(device);
    return finish(state, copy_out(uuid, length, found->uuid));
}

static void memory_of(const struct device_state *device, unsigned long long *total,
                      unsigned long long *used, unsigned long long *free_bytes) {
    *total = device->memory_total;
    *used = device->memory_used > device->memory_total ? device->memory_total : device->memory_used;
    *free_bytes = *total - *used;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    BEGIN_DEVICE(device);
    if (memory == NULL) {
        return finish(state, NVML_ERROR_INVALID_ARGUMENT);
    }
    memory_of(found, &memory->total, &memory->used, &memory->free);
    return finish(state, NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    BEGIN_DEVICE(device);
    if (memory == NULL) {
        return finish(state, NVML_ERROR_INVALID_ARGUMENT);
    }
    if (memory->version != NVML_MEMORY_V2_VERSION) {
        return finish(state, NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    memory->reserved = 0;
    memory_of(found, &memory->total, &memory->used, &memory->free);
    return finish(state, NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device,
                                                  nvmlUtilization_t *utilization) {
    BEGIN_DEVICE(device);
    if (utilization == NULL) {
        return finish(state, NVML_ERROR_INVALID_ARGUMENT);
    }
    utilization->gpu = found->utilization_gpu > 100 ? 100 : found->utilization_gpu;
    utilization->memory = found->utilization_memory > 100 ? 100 : found->utilization_memory;
    return finish(state, NVML_SUCCESS);
}

/* errorType: 0 corrected, 1 uncorrected; counterType: 0 volatile, 1 aggregate. */
EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int errorType,
                                                int counterType, unsigned long long *count) {
    BEGIN_DEVICE(device);
    if (!found->ecc_supported) {
        return finish(state, NVML_ERROR_NOT_SUPPORTED);
    }
    if (count == NULL || errorType < 0 || errorType > 1 || counterType < 0 || counterType > 1) {
        return finish(state, NVML_ERROR_INVALID_ARGUMENT);
    }
    *count = found->ecc[errorType][counterType];
    return finish(state, NVML_SUCCESS);
}

/* ---- events ------------------------------------------------------------ */

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                     unsigned long long *eventTypes) {
    BEGIN_DEVICE(device);
    if (eventTypes == NULL) {
        return finish(state, NVML_ERROR_INVALID_ARGUMENT);
    }
    *eventTypes = FAKE_SUPPORTED_EVENTS;
    return finish(state, NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    if (set == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    struct state *state = NULL;
    nvmlReturn_t ret = begin(&state);
    if (ret != NVML_SUCCESS) {
        return ret;
    }
    *set = calloc(1, sizeof(**set));
    return finish(state, *set == NULL ? NVML_ERROR_MEMORY : NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes,
                                             nvmlEventSet_t set) {
    BEGIN_DEVICE(device);
    if (set == NULL) {
        return finish(state, NVML_ERROR_INVALID_ARGUMENT);
    }
    if ((eventTypes & ~FAKE_SUPPORTED_EVENTS) != 0) {
        return finish(state, NVML_ERROR_NOT_SUPPORTED);
    }
    unsigned int index = device->index;
    if ((set->types[index] & NVML_EVENT_TYPE_XID_CRITICAL) == 0) {
        set->read[index] = found->xid_count; /* only events from now on */
    }
    set->types[index] |= eventTypes;
    return finish(state, NVML_SUCCESS);
}

/* One pending XID event of a registered device; else NVML_ERROR_GPU_IS_LOST when a
 * registered device is lost, NVML_ERROR_TIMEOUT when none is. */
static nvmlReturn_t next_event(nvmlEventSet_t set, const struct state *state,
                               nvmlEventData_t *data) {
    nvmlReturn_t none = NVML_ERROR_TIMEOUT;
    for (unsigned int i = 0; i < state->device_count; i++) {
        if ((set->types[i] & NVML_EVENT_TYPE_XID_CRITICAL) == 0) {
            continue;
        }
        const struct device_state *device = &state->devices[i];
        if (device->lost) {
            none = NVML_ERROR_GPU_IS_LOST;
            continue;
        }
        if (device->xid_count < set->read[i]) {
            set->read[i] = 0; /* the log was rewritten: read it anew */
        }
        if (set->read[i] < device->xid_count) {
            memset(data, 0, sizeof(*data));
            data->device = &g_devices[i];
            data->eventType = NVML_EVENT_TYPE_XID_CRITICAL;
            data->eventData = device->xids[set->read[i]++];
            data->gpuInstanceId = 0xFFFFFFFFU;
            data->computeInstanceId = 0xFFFFFFFFU;
            return NVML_SUCCESS;
        }
    }
    return none;
}

static double now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                        unsigned int timeoutms) {
    if (set == NULL || data == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    const double deadline = now_ms() + timeoutms;
    for (;;) {
        struct state *state = NULL;
        nvmlReturn_t ret = begin(&state);
        if (ret != NVML_SUCCESS) {
            return ret;
        }
        ret = finish(state, next_event(set, state, data));
        double left = deadline - now_ms();
        if (ret != NVML_ERROR_TIMEOUT || left <= 0) {
            return ret;
        }
        double step = left < 5.0 ? left : 5.0; /* the file is polled every 5 ms */
        struct timespec pause = {0, (long)(step * 1e6)};
        nanosleep(&pause, NULL);
    }
}

EXPORT nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data,
                                     unsigned int timeoutms) {
    return nvmlEventSetWait_v2(set, data, timeoutms);
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    if (set == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (!initialized()) {
        return NVML_ERROR_UNINITIALIZED;
    }
    free(set);
    return NVML_SUCCESS;
}
