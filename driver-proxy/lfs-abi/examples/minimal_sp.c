/*
 * minimal_sp.c — the smallest useful OpenTeller LFS service provider, in C.
 *
 * A card reader without a card: it answers LFS_INF_IDC_STATUS and LFS_INF_IDC_CAPABILITIES,
 * executes LFS_CMD_IDC_RESET, and refuses the other commands with LFS_ERR_IDC_NOMEDIA. It shows
 * the rules of docs/lfs.md in code: requests are queued and completed by the SP's own worker
 * thread (never inside the SPI call), every result is one heap block handed back through
 * LFSFreeResult, and LFSClose joins the worker so no callback runs after it returns.
 *
 * Build:  cc -std=c99 -shared -fPIC -pthread -I../include minimal_sp.c -o libminimal_sp.so
 * Run:    driver-proxy --class CardReader --backend lfs:./libminimal_sp.so --listen unix:/tmp/idc.sock
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "openteller_lfs.h"

#define QUEUE_LEN 32

typedef struct {
    uint32_t message; /* LFS_EXECUTE_COMPLETE or LFS_GETINFO_COMPLETE */
    uint32_t code;
    LFSREQUESTID id;
} Job;

/* One heap block per result: the LFSRESULT first, its buffer after it. */
typedef struct {
    LFSRESULT result;
    union {
        LFSIDCSTATUS status;
        LFSIDCCAPS caps;
    } buffer;
} Block;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static unsigned started;
static int open_session;     /* one session at a time: handle 1 */
static int closing;
static pthread_t worker;
static LFSCOMPLETIONPROC on_complete;
static void *user;
static Job queue[QUEUE_LEN];
static unsigned head, count;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void complete(const Job *job, LFSHRESULT hresult) {
    Block *b = calloc(1, sizeof *b);
    if (b == NULL) return; /* out of memory: nothing sensible to report */
    b->result.message = job->message;
    b->result.service = 1;
    b->result.request_id = job->id;
    b->result.timestamp_ms = now_ms();
    b->result.result = hresult;
    b->result.code = job->code;
    if (hresult == LFS_SUCCESS && job->code == LFS_INF_IDC_STATUS && job->message == LFS_GETINFO_COMPLETE) {
        b->buffer.status.device = LFS_IDC_DEVONLINE;
        b->buffer.status.media = LFS_IDC_MEDIANOTPRESENT;
        b->buffer.status.retain_bin = LFS_IDC_RETAINNOTSUPP;
        b->buffer.status.chip_power = LFS_IDC_CHIPNODEVICE;
        b->result.buffer = &b->buffer.status;
        b->result.buffer_len = sizeof b->buffer.status;
    } else if (hresult == LFS_SUCCESS && job->code == LFS_INF_IDC_CAPABILITIES) {
        b->buffer.caps.dev_class = LFS_SERVICE_CLASS_IDC;
        b->buffer.caps.type = LFS_IDC_TYPESWIPE;
        b->buffer.caps.read_tracks = LFS_IDC_TRACK2;
        strcpy(b->buffer.caps.vendor, "Example Corp");
        strcpy(b->buffer.caps.model, "Minimal C SP");
        strcpy(b->buffer.caps.firmware, "1.0");
        b->result.buffer = &b->buffer.caps;
        b->result.buffer_len = sizeof b->buffer.caps;
    }
    on_complete(&b->result, user); /* the host frees it with LFSFreeResult */
}

static void *run(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (count == 0 && !closing) pthread_cond_wait(&wake, &lock);
        if (count == 0) break; /* closing and drained */
        Job job = queue[head];
        head = (head + 1) % QUEUE_LEN;
        count--;
        int cancel = closing;
        pthread_mutex_unlock(&lock); /* never hold a lock while calling back */
        LFSHRESULT hr = LFS_SUCCESS;
        if (cancel) hr = LFS_ERR_CANCELED;
        else if (job.message == LFS_EXECUTE_COMPLETE && job.code != LFS_CMD_IDC_RESET) hr = LFS_ERR_IDC_NOMEDIA;
        complete(&job, hr);
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static LFSHRESULT enqueue(LFSHSERVICE service, uint32_t message, uint32_t code, LFSREQUESTID id) {
    LFSHRESULT hr = LFS_SUCCESS;
    pthread_mutex_lock(&lock);
    if (!started) hr = LFS_ERR_NOT_STARTED;
    else if (!open_session || service != 1) hr = LFS_ERR_INVALID_HSERVICE;
    else if (id == 0) hr = LFS_ERR_INVALID_REQ_ID;
    else if (count == QUEUE_LEN) hr = LFS_ERR_OUT_OF_MEMORY;
    else {
        queue[(head + count) % QUEUE_LEN] = (Job){message, code, id};
        count++;
        pthread_cond_signal(&wake);
    }
    pthread_mutex_unlock(&lock);
    return hr;
}

LFS_EXPORT LFSHRESULT LFSStartUp(uint32_t abi_version, LFSVERSION *version) {
    if (version == NULL) return LFS_ERR_INVALID_POINTER;
    memset(version, 0, sizeof *version);
    version->version = version->low_version = version->high_version = LFS_ABI_VERSION;
    strcpy(version->description, "Minimal C service provider");
    if (LFS_VERSION_MAJOR(abi_version) > LFS_ABI_VERSION_MAJOR) return LFS_ERR_SPI_VER_TOO_HIGH;
    if (LFS_VERSION_MAJOR(abi_version) < LFS_ABI_VERSION_MAJOR) return LFS_ERR_SPI_VER_TOO_LOW;
    pthread_mutex_lock(&lock);
    started++;
    pthread_mutex_unlock(&lock);
    return LFS_SUCCESS;
}

LFS_EXPORT LFSHRESULT LFSCleanUp(void) {
    pthread_mutex_lock(&lock);
    LFSHRESULT hr = started ? LFS_SUCCESS : LFS_ERR_NOT_STARTED;
    if (started) started--;
    pthread_mutex_unlock(&lock);
    return hr;
}

LFS_EXPORT LFSHRESULT LFSOpen(const char *logical_name, LFSCOMPLETIONPROC complete_proc, LFSEVENTPROC event_proc,
                              void *user_data, LFSHSERVICE *service) {
    if (logical_name == NULL || complete_proc == NULL || event_proc == NULL || service == NULL)
        return LFS_ERR_INVALID_POINTER;
    pthread_mutex_lock(&lock);
    LFSHRESULT hr = LFS_SUCCESS;
    if (!started) hr = LFS_ERR_NOT_STARTED;
    else if (open_session) hr = LFS_ERR_SERVICE_NOT_FOUND; /* this SP has one device */
    else {
        on_complete = complete_proc;
        user = user_data;
        closing = 0;
        head = count = 0;
        if (pthread_create(&worker, NULL, run, NULL) != 0) hr = LFS_ERR_OUT_OF_MEMORY;
        else {
            open_session = 1;
            *service = 1;
        }
    }
    pthread_mutex_unlock(&lock);
    return hr;
}

LFS_EXPORT LFSHRESULT LFSRegister(LFSHSERVICE service, uint32_t event_classes) {
    (void)event_classes; /* this SP never has unsolicited events */
    return service == 1 && open_session ? LFS_SUCCESS : LFS_ERR_INVALID_HSERVICE;
}

LFS_EXPORT LFSHRESULT LFSAsyncExecute(LFSHSERVICE service, uint32_t command, const void *cmd_data,
                                      uint32_t cmd_data_len, uint32_t timeout_ms, LFSREQUESTID request_id) {
    (void)cmd_data; (void)cmd_data_len; (void)timeout_ms;
    return enqueue(service, LFS_EXECUTE_COMPLETE, command, request_id);
}

LFS_EXPORT LFSHRESULT LFSAsyncGetInfo(LFSHSERVICE service, uint32_t category, const void *query,
                                      uint32_t query_len, uint32_t timeout_ms, LFSREQUESTID request_id) {
    (void)query; (void)query_len; (void)timeout_ms;
    if (category != LFS_INF_IDC_STATUS && category != LFS_INF_IDC_CAPABILITIES) return LFS_ERR_INVALID_CATEGORY;
    return enqueue(service, LFS_GETINFO_COMPLETE, category, request_id);
}

LFS_EXPORT LFSHRESULT LFSCancelAsyncRequest(LFSHSERVICE service, LFSREQUESTID request_id) {
    (void)request_id; /* requests finish at once: nothing is ever waiting to be canceled */
    return service == 1 && open_session ? LFS_ERR_INVALID_REQ_ID : LFS_ERR_INVALID_HSERVICE;
}

LFS_EXPORT LFSHRESULT LFSClose(LFSHSERVICE service) {
    pthread_mutex_lock(&lock);
    if (service != 1 || !open_session) {
        pthread_mutex_unlock(&lock);
        return LFS_ERR_INVALID_HSERVICE;
    }
    closing = 1; /* the worker completes what is queued with LFS_ERR_CANCELED, then ends */
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    pthread_join(worker, NULL); /* after this, no callback runs */
    pthread_mutex_lock(&lock);
    open_session = 0;
    pthread_mutex_unlock(&lock);
    return LFS_SUCCESS;
}

LFS_EXPORT LFSHRESULT LFSFreeResult(const LFSRESULT *result) {
    if (result == NULL) return LFS_ERR_INVALID_POINTER;
    free((void *)result); /* the LFSRESULT is the first member of its Block */
    return LFS_SUCCESS;
}
