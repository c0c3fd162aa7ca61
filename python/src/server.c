/*
 * server: _core.Server, one ps_server on a libuv loop of its own, driven from asyncio.
 *
 * Driving: asyncio watches the libuv loop's backend fd (an epoll fd: readable when any of
 * libuv's watchers is ready); each wake-up runs uv_run(UV_RUN_NOWAIT), which does the I/O and
 * calls pulsec, which calls Python. After each pass, and after every call into pulsec from
 * Python outside a pass (emit from a task, a request with a timeout, a close), the binding asks
 * libuv what it needs next (server_after_call): a pass soon (call_soon) when it holds work the
 * epoll fd cannot announce: watchers started since the last poll (registered with epoll only by
 * the next uv_run), pending write callbacks, closing handles; otherwise a pass when its next
 * timer is due (call_later, kept when an earlier one is already scheduled). Nothing blocks the
 * asyncio loop: a pass never waits.
 */
#include "binding.h"

#include <errno.h>
#include <stddef.h>

/*
 * Watchers that libuv has queued for epoll_ctl but not yet registered. libuv 1.44's
 * uv_backend_timeout() does not count them (later versions do), so without this check a write
 * that could not finish at once would wait for an unrelated wake-up. The queue head is the
 * loop's public-struct field watcher_queue: a two-pointer list head that is empty when its next
 * pointer points at itself, in every libuv 1.x layout.
 */
static bool watchers_pending(uv_loop_t *loop)
{
    void **q = (void **)&loop->watcher_queue;
    return q[0] != (void *)q;
}

static int schedule_soon(Server *s)
{
    if (s->soon_pending)
        return 0;
    PyObject *cb = PyObject_GetAttrString((PyObject *)s, "_on_soon");
    PyObject *h = cb ? PyObject_CallMethod(s->aloop, "call_soon", "O", cb) : NULL;
    Py_XDECREF(cb);
    if (!h)
        return -1;
    Py_DECREF(h);
    s->soon_pending = true;
    return 0;
}

static int schedule_timer(Server *s, int timeout_ms)
{
    uint64_t due = uv_now(&s->loop) + (uint64_t)timeout_ms;
    if (s->timer_handle && s->timer_due <= due)
        return 0; /* an earlier wake-up is scheduled; the pass then schedules the next */
    if (s->timer_handle) {
        PyObject *r = PyObject_CallMethod(s->timer_handle, "cancel", NULL);
        Py_XDECREF(r);
        Py_CLEAR(s->timer_handle);
        if (!r)
            return -1;
    }
    PyObject *cb = PyObject_GetAttrString((PyObject *)s, "_on_timer");
    PyObject *h =
        cb ? PyObject_CallMethod(s->aloop, "call_later", "dO", timeout_ms / 1000.0, cb) : NULL;
    Py_XDECREF(cb);
    if (!h)
        return -1;
    s->timer_handle = h;
    s->timer_due = due;
    return 0;
}

int server_after_call(Server *s)
{
    if (!s->srv || s->in_run)
        return 0; /* inside a pass: the pass's end looks */
    uv_loop_t *l = &s->loop;
    if (!uv_loop_alive(l))
        return schedule_soon(s); /* stopped (by us, or by pulsec's own signal handling in a
                                    worker): the pass finishes it */
    if (watchers_pending(l))
        return schedule_soon(s);
    uv_update_time(l);
    int t = uv_backend_timeout(l);
    if (t == 0)
        return schedule_soon(s);
    return t > 0 ? schedule_timer(s, t) : 0;
}

int server_check_thread(Server *s)
{
    if (s->thread_id != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pulsec objects must be used on the thread that runs the app's event loop");
        return -1;
    }
    return 0;
}

PyObject *server_spawn_task(Server *s, PyObject *coro, PyObject *context)
{
    PyObject *create = PyObject_GetAttrString(s->aloop, "create_task");
    if (!create)
        return NULL;
    PyObject *args = PyTuple_Pack(1, coro);
    PyObject *kw = context ? Py_BuildValue("{s:O}", "context", context) : NULL;
    PyObject *task = args && (kw || !context) ? PyObject_Call(create, args, kw) : NULL;
    Py_DECREF(create);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    if (!task)
        return NULL;
    /* asyncio keeps only weak references to tasks: the set holds each until it is done. */
    int rc = PySet_Add(s->tasks, task);
    PyObject *discard = rc == 0 ? PyObject_GetAttrString(s->tasks, "discard") : NULL;
    PyObject *r = discard ? PyObject_CallMethod(task, "add_done_callback", "O", discard) : NULL;
    Py_XDECREF(discard);
    if (!r) {
        Py_DECREF(task);
        return NULL;
    }
    Py_DECREF(r);
    return task;
}

int server_spawn(Server *s, PyObject *coro, PyObject *context)
{
    PyObject *task = server_spawn_task(s, coro, context);
    Py_XDECREF(task);
    return task ? 0 : -1;
}

/* ---- the stop ------------------------------------------------------------------------- */

static void finish(Server *s)
{
    if (s->reader_added) {
        PyObject *r = PyObject_CallMethod(s->aloop, "remove_reader", "i", uv_backend_fd(&s->loop));
        if (!r)
            PyErr_WriteUnraisable((PyObject *)s);
        Py_XDECREF(r);
        s->reader_added = false;
    }
    if (s->timer_handle) {
        PyObject *r = PyObject_CallMethod(s->timer_handle, "cancel", NULL);
        if (!r)
            PyErr_WriteUnraisable((PyObject *)s);
        Py_XDECREF(r);
        Py_CLEAR(s->timer_handle);
    }
    if (!s->in_worker) {
        ps_server_free(s->srv);
        if (uv_loop_close(&s->loop) != 0)
            PyErr_WarnEx(PyExc_ResourceWarning, "pulsec: libuv loop still had handles", 1);
    } /* else pulsec frees it once the worker's start callback returns, then exits */
    s->srv = NULL;
    s->loop_ready = false;
    free(s->deny_text);
    s->deny_text = NULL;
    if (s->closed) {
        PyObject *done = PyObject_CallMethod(s->closed, "done", NULL);
        if (done == Py_False) {
            PyObject *r = PyObject_CallMethod(s->closed, "set_result", "O", Py_None);
            if (!r)
                PyErr_WriteUnraisable((PyObject *)s);
            Py_XDECREF(r);
        }
        Py_XDECREF(done);
    }
}

/* One libuv pass, then whatever the next one needs. */
static void drive(Server *s)
{
    if (!s->srv || s->in_run)
        return;
    s->in_run = true;
    uv_run(&s->loop, UV_RUN_NOWAIT);
    s->in_run = false;
    if (!uv_loop_alive(&s->loop))
        finish(s);
    else if (server_after_call(s) < 0)
        PyErr_WriteUnraisable((PyObject *)s);
}

static PyObject *raise_pending(Server *s)
{
    if (s->pending_exc) {
        PyObject *exc = s->pending_exc;
        s->pending_exc = NULL;
        PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Server_on_ready(Server *s, PyObject *unused)
{
    drive(s);
    return raise_pending(s);
}

static PyObject *Server_on_soon(Server *s, PyObject *unused)
{
    s->soon_pending = false;
    drive(s);
    return raise_pending(s);
}

static PyObject *Server_on_timer(Server *s, PyObject *unused)
{
    Py_CLEAR(s->timer_handle);
    s->timer_due = 0;
    drive(s);
    return raise_pending(s);
}

/* ---- options -------------------------------------------------------------------------- */

/* OPT_WINDOW: milliseconds where 0 means off (resume_window_ms=0 is PS_RESUME_OFF, as
 * --resume-window 0 is on the example servers), not the C default that 0 means in C. */
enum opt_kind { OPT_STR, OPT_U32, OPT_SIZE, OPT_INT, OPT_BOOL, OPT_STRLIST, OPT_WINDOW };

static const struct opt {
    const char *name;
    enum opt_kind kind;
    size_t offset;
} OPTIONS[] = {
#define OPT(name, kind)                                                                            \
    {                                                                                              \
#name, kind, offsetof(ps_server_opts, name)                                                \
    }
    OPT(path, OPT_STR),
    OPT(static_dir, OPT_STR),
    OPT(ping_interval_ms, OPT_U32),
    OPT(ping_timeout_ms, OPT_U32),
    OPT(connect_timeout_ms, OPT_U32),
    OPT(shutdown_grace_ms, OPT_U32),
    OPT(ws_idle_release_ms, OPT_U32),
    OPT(max_payload, OPT_SIZE),
    OPT(max_header_size, OPT_SIZE),
    OPT(max_body_size, OPT_SIZE),
    OPT(backlog, OPT_INT),
    OPT(websocket_only, OPT_BOOL),
    OPT(allowed_origins, OPT_STRLIST),
    OPT(max_queued_bytes, OPT_SIZE),
    OPT(max_connections, OPT_U32),
    OPT(max_views_per_session, OPT_U32),
    OPT(max_channels_per_session, OPT_U32),
    OPT(max_pending_requests, OPT_U32),
    OPT(idle_timeout_ms, OPT_U32),
    OPT(max_topics_per_channel, OPT_U32),
    OPT(max_topics, OPT_U32),
    OPT(trusted_proxies, OPT_STRLIST),
    OPT(workers, OPT_U32),
    OPT(redis_url, OPT_STR),
    OPT(redis_prefix, OPT_STR),
    OPT(max_redis_queued, OPT_SIZE),
    OPT(redis_timeout_ms, OPT_U32),
    OPT(close_timeout_ms, OPT_U32),
    OPT(max_unconnected, OPT_U32),
    OPT(max_unconnected_per_address, OPT_U32),
    OPT(tls_cert_file, OPT_STR),
    OPT(tls_key_file, OPT_STR),
    OPT(tls_handshake_timeout_ms, OPT_U32),
    OPT(resume_window_ms, OPT_WINDOW),
    OPT(max_replay_bytes, OPT_SIZE),
    OPT(max_detached_sessions, OPT_U32),
#undef OPT
};

static int opt_number(PyObject *v, const char *name, unsigned long long max,
                      unsigned long long *out)
{
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "option %s must be an int", name);
        return -1;
    }
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (PyErr_Occurred() || x > max) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "option %s must be between 0 and %llu", name, max);
        return -1;
    }
    *out = x;
    return 0;
}

/*
 * Fills `o` from the options dict. Strings, and the arrays of the list options, point into
 * objects that `keep` (a list) holds: keep it until ps_server_new has copied them.
 */
static int parse_options(PyObject *dict, ps_server_opts *o, PyObject *keep)
{
    memset(o, 0, sizeof *o);
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &k, &v)) {
        const char *name = PyUnicode_Check(k) ? PyUnicode_AsUTF8(k) : NULL;
        if (!name)
            return PyErr_Format(PyExc_TypeError, "option names must be str"), -1;
        const struct opt *opt = NULL;
        for (size_t i = 0; i < sizeof OPTIONS / sizeof OPTIONS[0]; i++)
            if (strcmp(OPTIONS[i].name, name) == 0)
                opt = &OPTIONS[i];
        if (!opt) {
            PyErr_Format(PyExc_TypeError, "unknown server option %R", k);
            return -1;
        }
        if (v == Py_None)
            continue; /* the default */
        char *field = (char *)o + opt->offset;
        unsigned long long x;
        switch (opt->kind) {
        case OPT_STR:
            if (PyObject_IsInstance(v, (PyObject *)&PyUnicode_Type) != 1) {
                /* os.PathLike for static_dir */
                PyObject *p = PyOS_FSPath(v);
                if (!p)
                    return -1;
                if (!PyUnicode_Check(p)) {
                    Py_DECREF(p);
                    return PyErr_Format(PyExc_TypeError, "option %s must be a str", name), -1;
                }
                if (PyList_Append(keep, p) < 0) {
                    Py_DECREF(p);
                    return -1;
                }
                Py_DECREF(p);
                v = PyList_GET_ITEM(keep, PyList_GET_SIZE(keep) - 1);
            }
            if (!(*(const char **)field = PyUnicode_AsUTF8(v)))
                return -1;
            break;
        case OPT_U32:
            if (opt_number(v, name, UINT32_MAX, &x) < 0)
                return -1;
            *(uint32_t *)field = (uint32_t)x;
            break;
        case OPT_WINDOW:
            if (opt_number(v, name, PS_RESUME_OFF - 1, &x) < 0)
                return -1;
            *(uint32_t *)field = x ? (uint32_t)x : PS_RESUME_OFF;
            break;
        case OPT_SIZE:
            if (opt_number(v, name, SIZE_MAX, &x) < 0)
                return -1;
            *(size_t *)field = (size_t)x;
            break;
        case OPT_INT:
            if (opt_number(v, name, INT32_MAX, &x) < 0)
                return -1;
            *(int *)field = (int)x;
            break;
        case OPT_BOOL: *(bool *)field = PyObject_IsTrue(v) == 1; break;
        case OPT_STRLIST: {
            PyObject *seq = PyUnicode_Check(v) ? PyTuple_Pack(1, v) : PySequence_Tuple(v);
            if (!seq)
                return -1;
            Py_ssize_t n = PyTuple_GET_SIZE(seq);
            /* The NULL-terminated array lives in a bytes object that `keep` holds. */
            PyObject *mem = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(char *));
            if (!mem || PyList_Append(keep, seq) < 0 || PyList_Append(keep, mem) < 0) {
                Py_XDECREF(mem);
                Py_DECREF(seq);
                return -1;
            }
            Py_DECREF(mem);
            Py_DECREF(seq);
            const char **array = (const char **)PyBytes_AS_STRING(mem);
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *item = PyTuple_GET_ITEM(seq, i);
                if (!PyUnicode_Check(item))
                    return PyErr_Format(PyExc_TypeError, "option %s must be strs", name), -1;
                if (!(array[i] = PyUnicode_AsUTF8(item)))
                    return -1;
            }
            array[n] = NULL;
            *(const char *const **)field = array;
            break;
        }
        }
    }
    return 0;
}

/* ---- type ----------------------------------------------------------------------------- */

static void worker_start(ps_server *srv, int index, void *user);

static PyObject *Server_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"options", NULL};
    PyObject *options = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O!", names, &PyDict_Type, &options))
        return NULL;
    Server *s = (Server *)type->tp_alloc(type, 0);
    if (!s)
        return NULL;
    s->routes = PyList_New(0);
    s->connect_mw = PyList_New(0);
    s->message_mw = PyList_New(0);
    s->tasks = PySet_New(NULL);
    if (!s->routes || !s->connect_mw || !s->message_mw || !s->tasks) {
        Py_DECREF(s);
        return NULL;
    }
    live.servers++;
    if (options) {
        /* Checked now, so that a bad option fails at App(...) rather than at start. */
        ps_server_opts o;
        PyObject *keep = PyList_New(0);
        int rc = keep ? parse_options(options, &o, keep) : -1;
        Py_XDECREF(keep);
        if (rc < 0) {
            Py_DECREF(s);
            return NULL;
        }
    }
    return (PyObject *)s;
}

static int Server_traverse(Server *s, visitproc visit, void *arg)
{
    Py_VISIT(s->aloop);
    Py_VISIT(s->timer_handle);
    Py_VISIT(s->closed);
    Py_VISIT(s->tasks);
    Py_VISIT(s->routes);
    Py_VISIT(s->connect_mw);
    Py_VISIT(s->message_mw);
    Py_VISIT(s->pending_exc);
    Py_VISIT(s->worker_main);
    return 0;
}

static int Server_clear(Server *s)
{
    if (s->srv)
        return 0; /* running: its references are what the C server calls */
    Py_CLEAR(s->aloop);
    Py_CLEAR(s->timer_handle);
    Py_CLEAR(s->closed);
    Py_CLEAR(s->tasks);
    Py_CLEAR(s->routes);
    Py_CLEAR(s->connect_mw);
    Py_CLEAR(s->message_mw);
    Py_CLEAR(s->pending_exc);
    Py_CLEAR(s->worker_main);
    return 0;
}

static void Server_dealloc(Server *s)
{
    PyObject_GC_UnTrack(s);
    if (s->srv && !is_finalizing()) {
        /* Dropped while serving (its asyncio loop is gone, or it would still hold us): stop
         * here, on this thread, rather than leave sockets that nobody serves. */
        s->stopping = true;
        ps_server_stop(s->srv);
        s->in_run = true;
        uv_run(&s->loop, UV_RUN_DEFAULT);
        s->in_run = false;
        ps_server_free(s->srv);
        s->srv = NULL;
        uv_loop_close(&s->loop);
    }
    free(s->deny_text);
    Py_CLEAR(s->aloop);
    Py_CLEAR(s->timer_handle);
    Py_CLEAR(s->closed);
    Py_CLEAR(s->tasks);
    Py_CLEAR(s->routes);
    Py_CLEAR(s->connect_mw);
    Py_CLEAR(s->message_mw);
    Py_CLEAR(s->pending_exc);
    Py_CLEAR(s->worker_main);
    live.servers--;
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int register_route(Server *s, PyObject *entry)
{
    ps_view_type type = {.init = view_init, .dispose = view_dispose, .user = entry};
    int rc = ps_route(s->srv, PyUnicode_AsUTF8(PyTuple_GET_ITEM(entry, 2)), &type);
    if (rc == PS_EEXIST)
        return PyErr_Format(PyExc_ValueError, "%R already has a view", PyTuple_GET_ITEM(entry, 2)),
               -1;
    if (rc != 0)
        return PyErr_Format(PyExc_ValueError, "invalid view path %R", PyTuple_GET_ITEM(entry, 2)),
               -1;
    return 0;
}

static PyObject *Server_route(Server *s, PyObject *args)
{
    PyObject *path, *fn;
    if (!PyArg_ParseTuple(args, "UO:route", &path, &fn))
        return NULL;
    PyObject *entry = PyTuple_Pack(3, (PyObject *)s, fn, path);
    if (!entry)
        return NULL;
    if ((s->srv && register_route(s, entry) < 0) || PyList_Append(s->routes, entry) < 0) {
        Py_DECREF(entry);
        return NULL;
    }
    Py_DECREF(entry);
    Py_RETURN_NONE;
}

static PyObject *add_middleware(Server *s, PyObject *fn, PyObject *list, bool connect)
{
    PyObject *entry = PyTuple_Pack(2, (PyObject *)s, fn);
    if (!entry)
        return NULL;
    if (s->srv) {
        if (connect)
            ps_use_connect(s->srv, connect_middleware, entry);
        else
            ps_use_message(s->srv, message_middleware, entry);
    }
    int rc = PyList_Append(list, entry);
    Py_DECREF(entry);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Server_use_connect(Server *s, PyObject *fn)
{
    return add_middleware(s, fn, s->connect_mw, true);
}

static PyObject *Server_use_message(Server *s, PyObject *fn)
{
    return add_middleware(s, fn, s->message_mw, false);
}

static void destroy_server(Server *s);

/* The loop, the C server and what was registered on it, not yet listening. 0, or -1 with
 * nothing made (a server already running is left alone). */
static int create_server(Server *s, PyObject *options, const char *host, int port,
                         bool workers_allowed)
{
    if (s->srv || s->loop_ready) {
        PyErr_SetString(PyExc_RuntimeError, "the app is already serving");
        return -1;
    }
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port must be 0..65535");
        return -1;
    }
    ps_server_opts o;
    PyObject *keep = PyList_New(0);
    if (!keep || parse_options(options, &o, keep) < 0) {
        Py_XDECREF(keep);
        return -1;
    }
    if (o.workers > 1 && !workers_allowed) {
        Py_DECREF(keep);
        PyErr_SetString(PyExc_RuntimeError,
                        "workers need app.run(): each worker process runs its own event loop");
        return -1;
    }
    o.host = host;
    o.port = port;
    if (o.workers > 1) {
        o.worker_start = worker_start;
        o.worker_user = s;
    }
    int rc = uv_loop_init(&s->loop);
    if (rc != 0) {
        Py_DECREF(keep);
        PyErr_Format(PyExc_OSError, "uv_loop_init: %s", uv_strerror(rc));
        return -1;
    }
    s->loop_ready = true;
    s->srv = ps_server_new(&s->loop, &o);
    Py_DECREF(keep);
    if (!s->srv) {
        uv_loop_close(&s->loop);
        s->loop_ready = false;
        PyErr_SetString(PyExc_ValueError,
                        "invalid server options (pulsec logged why: e.g. static_dir not found)");
        return -1;
    }
    s->stopping = false;
    s->soon_pending = false;
    s->in_worker = false;
    s->thread_id = PyThread_get_thread_ident();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(s->routes); i++) {
        if (register_route(s, PyList_GET_ITEM(s->routes, i)) < 0) {
            destroy_server(s);
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(s->connect_mw); i++)
        ps_use_connect(s->srv, connect_middleware, PyList_GET_ITEM(s->connect_mw, i));
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(s->message_mw); i++)
        ps_use_message(s->srv, message_middleware, PyList_GET_ITEM(s->message_mw, i));
    return 0;
}

/* Undoes create_server (and a listen) after a failure, keeping the Python exception. */
static void destroy_server(Server *s)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (s->reader_added) {
        PyObject *x = PyObject_CallMethod(s->aloop, "remove_reader", "i", uv_backend_fd(&s->loop));
        Py_XDECREF(x);
        PyErr_Clear();
        s->reader_added = false;
    }
    if (s->srv) {
        ps_server_stop(s->srv);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        ps_server_free(s->srv);
        s->srv = NULL;
    }
    if (s->loop_ready)
        uv_loop_close(&s->loop);
    s->loop_ready = false;
    PyErr_Restore(type, value, tb);
}

static int listen_error(int rc, const char *host, int port)
{
    PyObject *msg = PyUnicode_FromFormat("cannot listen on %s:%d: %s", host, port, ps_strerror(rc));
    /* A UV_E* code is -errno on Unix: OSError(errno, ...) picks the subclass, as Python does. */
    PyObject *args = msg ? Py_BuildValue("(iO)", rc < 0 && rc > -4096 ? -rc : 0, msg) : NULL;
    if (args)
        PyErr_SetObject(PyExc_OSError, args);
    Py_XDECREF(args);
    Py_XDECREF(msg);
    return -1;
}

/* Starts driving a listening server from the asyncio loop `aloop`. 0 or -1. */
static int attach_loop(Server *s, PyObject *aloop)
{
    Py_XSETREF(s->aloop, Py_NewRef(aloop));
    s->thread_id = PyThread_get_thread_ident();
    Py_XSETREF(s->closed, PyObject_CallMethod(aloop, "create_future", NULL));
    if (!s->closed)
        return -1;
    PyObject *cb = PyObject_GetAttrString((PyObject *)s, "_on_ready");
    PyObject *r =
        cb ? PyObject_CallMethod(aloop, "add_reader", "iO", uv_backend_fd(&s->loop), cb) : NULL;
    Py_XDECREF(cb);
    if (!r)
        return -1;
    Py_DECREF(r);
    s->reader_added = true;
    return server_after_call(s);
}

static PyObject *Server_start(Server *s, PyObject *args, PyObject *kw)
{
    static char *names[] = {"loop", "options", "host", "port", NULL};
    PyObject *aloop, *options;
    const char *host;
    int port;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!si:start", names, &aloop, &PyDict_Type, &options,
                                     &host, &port))
        return NULL;
    if (create_server(s, options, host, port, false) < 0)
        return NULL;
    Py_XSETREF(s->aloop, Py_NewRef(aloop));
    int rc = ps_server_listen(s->srv);
    if ((rc != 0 && listen_error(rc, host, port) < 0) || attach_loop(s, aloop) < 0) {
        destroy_server(s);
        return NULL;
    }
    return PyLong_FromLong(ps_server_port(s->srv));
}

/* ---- workers --------------------------------------------------------------------------- */

/*
 * With opts.workers pulsec forks the worker processes inside ps_server_listen, with the GIL
 * held by this thread, and calls this in each child before its loop serves anything. The child
 * is a copy of a process in the middle of a Python call: Python's runtime is told it forked,
 * then the app's worker_main runs a fresh asyncio loop that drives the child's copy of the
 * server until it stops (SIGTERM from the supervisor, through pulsec's own signal handlers).
 * When this returns pulsec frees the server and exits the process.
 */
static void worker_start(ps_server *srv, int index, void *user)
{
    Server *s = user;
    PyOS_AfterFork_Child();
    s->in_worker = true;
    s->reader_added = false;
    s->timer_handle = NULL; /* the parent's asyncio objects mean nothing here */
    s->soon_pending = false;
    s->thread_id = PyThread_get_thread_ident();
    PyObject *r = PyObject_CallFunction(s->worker_main, "i", index);
    if (!r)
        PyErr_Print();
    Py_XDECREF(r);
    PyObject *out = PySys_GetObject("stdout"), *err = PySys_GetObject("stderr");
    PyObject *x = out ? PyObject_CallMethod(out, "flush", NULL) : NULL;
    Py_XDECREF(x);
    x = err ? PyObject_CallMethod(err, "flush", NULL) : NULL;
    Py_XDECREF(x);
    PyErr_Clear();
}

static PyObject *Server_listen_workers(Server *s, PyObject *args)
{
    PyObject *options, *main;
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "O!siO:listen_workers", &PyDict_Type, &options, &host, &port,
                          &main))
        return NULL;
    Py_XSETREF(s->worker_main, Py_NewRef(main));
    if (create_server(s, options, host, port, true) < 0)
        return NULL;
    /* Forks: only the supervisor returns from here. */
    int rc = ps_server_listen(s->srv);
    if (rc != 0) {
        listen_error(rc, host, port);
        destroy_server(s);
        return NULL;
    }
    return PyLong_FromLong(ps_server_port(s->srv));
}

static PyObject *Server_supervise(Server *s, PyObject *unused)
{
    if (!s->srv)
        return PyErr_Format(PyExc_RuntimeError, "no workers to supervise");
    /* Blocks until every worker exited; the GIL stays held, since pulsec forks restarted
     * workers from here and each child must find Python's runtime as its parent had it. */
    int rc = ps_server_run(s->srv);
    ps_server_free(s->srv);
    s->srv = NULL;
    uv_loop_close(&s->loop);
    s->loop_ready = false;
    return PyLong_FromLong(rc);
}

static PyObject *Server_adopt(Server *s, PyObject *aloop)
{
    if (!s->in_worker || !s->srv)
        return PyErr_Format(PyExc_RuntimeError, "adopt() is for a worker process");
    if (attach_loop(s, aloop) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Server_get_worker(Server *s, void *closure)
{
    if (!s->srv)
        Py_RETURN_NONE;
    return PyLong_FromLong(ps_server_worker(s->srv));
}

static PyObject *Server_stop(Server *s, PyObject *unused)
{
    if (!s->srv || s->stopping)
        Py_RETURN_NONE;
    if (server_check_thread(s) < 0)
        return NULL;
    s->stopping = true;
    ps_server_stop(s->srv); /* disposes every view: on_dispose runs here */
    if (server_after_call(s) < 0)
        return NULL;
    return raise_pending(s);
}

static PyObject *Server_publish(Server *s, PyObject *args, PyObject *kw)
{
    static char *names[] = {"topic", "event", "payload", "skip", NULL};
    const char *topic, *event;
    PyObject *payload = Py_None, *skip = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ss|OO:publish", names, &topic, &event, &payload,
                                     &skip))
        return NULL;
    if (!s->srv || s->stopping)
        return PyErr_Format(PyExc_RuntimeError, "the app is not serving");
    if (server_check_thread(s) < 0)
        return NULL;
    ps_channel *except = NULL;
    if (skip != Py_None) {
        if (!PyObject_TypeCheck(skip, &ChannelType))
            return PyErr_Format(PyExc_TypeError, "skip must be a Channel or None");
        except = ((Channel *)skip)->ch; /* NULL once gone: it is in no topic then anyway */
    }
    json_t *j = py_to_json(payload);
    if (!j)
        return NULL;
    int rc = ps_publish_except(s->srv, topic, event, j, except);
    json_decref(j);
    if (server_after_call(s) < 0)
        return NULL;
    if (rc == PS_ECLOSED)
        return PyErr_Format(PyExc_RuntimeError, "the app is stopping");
    if (rc != 0)
        return PyErr_Format(PyExc_ValueError, "cannot publish %s to %s: %s", event, topic,
                            ps_strerror(rc));
    Py_RETURN_NONE;
}

static PyObject *Server_reload_tls(Server *s, PyObject *unused)
{
    if (!s->srv)
        return PyErr_Format(PyExc_RuntimeError, "the app is not serving");
    if (server_check_thread(s) < 0)
        return NULL;
    if (ps_server_reload_tls(s->srv) != 0)
        return PyErr_Format(PyExc_ValueError,
                            "no TLS, or the certificate or key does not load (pulsec logged "
                            "why; the current certificate stays)");
    Py_RETURN_NONE;
}

static PyObject *Server_stats(Server *s, PyObject *unused)
{
    ps_server_stats st = {0};
    if (s->srv)
        ps_server_get_stats(s->srv, &st);
    PyObject *d = PyDict_New();
    const char *name;
    uint64_t value;
    for (size_t i = 0; d && ps_server_stats_field(&st, i, &name, &value); i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(value);
        if (!v || PyDict_SetItemString(d, name, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

static PyObject *Server_get_port(Server *s, void *closure)
{
    if (!s->srv)
        Py_RETURN_NONE;
    return PyLong_FromLong(ps_server_port(s->srv));
}

static PyObject *Server_get_closed(Server *s, void *closure)
{
    if (!s->closed)
        Py_RETURN_NONE;
    return Py_NewRef(s->closed);
}

static PyObject *Server_get_serving(Server *s, void *closure)
{
    return PyBool_FromLong(s->srv && !s->stopping);
}

static PyMethodDef Server_methods[] = {
    {"route", (PyCFunction)Server_route, METH_VARARGS, "route(path, fn): a view."},
    {"use_connect", (PyCFunction)Server_use_connect, METH_O, "Connect middleware."},
    {"use_message", (PyCFunction)Server_use_message, METH_O, "Channel message middleware."},
    {"start", (PyCFunction)(void (*)(void))Server_start, METH_VARARGS | METH_KEYWORDS,
     "start(loop, options, host, port) -> port: listens and starts driving libuv from loop."},
    {"listen_workers", (PyCFunction)Server_listen_workers, METH_VARARGS,
     "listen_workers(options, host, port, worker_main) -> port, in the supervisor only."},
    {"supervise", (PyCFunction)Server_supervise, METH_NOARGS,
     "Supervises the workers until they all exited; returns pulsec's status."},
    {"adopt", (PyCFunction)Server_adopt, METH_O, "In a worker: drive its server from loop."},
    {"stop", (PyCFunction)Server_stop, METH_NOARGS,
     "Graceful stop; the `closed` future resolves when it is complete."},
    {"stats", (PyCFunction)Server_stats, METH_NOARGS, "pulsec's server counters."},
    {"reload_tls", (PyCFunction)Server_reload_tls, METH_NOARGS,
     "Reads the TLS certificate and key again; open connections keep theirs."},
    {"publish", (PyCFunction)(void (*)(void))Server_publish, METH_VARARGS | METH_KEYWORDS,
     "publish(topic, event, payload=None, skip=None): to every channel joined to topic."},
    {"_on_ready", (PyCFunction)Server_on_ready, METH_NOARGS, NULL},
    {"_on_soon", (PyCFunction)Server_on_soon, METH_NOARGS, NULL},
    {"_on_timer", (PyCFunction)Server_on_timer, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Server_getset[] = {
    {"port", (getter)Server_get_port, NULL, "The bound port while serving, else None.", NULL},
    {"closed", (getter)Server_get_closed, NULL, "Future resolved when the stop completed.", NULL},
    {"serving", (getter)Server_get_serving, NULL, "Listening and not stopping.", NULL},
    {"worker", (getter)Server_get_worker, NULL,
     "This process's worker index; -1 in the supervisor; 0 without workers.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pulsec._core.Server",
    .tp_basicsize = sizeof(Server),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One pulsec server on its own libuv loop, driven from an asyncio loop.",
    .tp_new = Server_new,
    .tp_dealloc = (destructor)Server_dealloc,
    .tp_traverse = (traverseproc)Server_traverse,
    .tp_clear = (inquiry)Server_clear,
    .tp_methods = Server_methods,
    .tp_getset = Server_getset,
};
