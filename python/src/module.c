/*
 * module: pulsec._core, the C half of the pulsec package. Holds the hooks the Python half
 * hands over (exception classes, the logger, the async helpers), routes pulsec's and jansson's
 * allocations through Python's raw allocator so that tracemalloc sees the C core's memory too,
 * and reports exceptions of user code.
 */
#include "binding.h"

py_hooks hooks;
py_live live;

bool is_awaitable(PyObject *o)
{
    PyAsyncMethods *am = Py_TYPE(o)->tp_as_async;
    return am && am->am_await;
}

/* Closes a coroutine nobody will await, so that Python does not warn about it. */
void discard_awaitable(PyObject *o)
{
    if (PyCoro_CheckExact(o)) {
        PyObject *r = PyObject_CallMethod(o, "close", NULL);
        if (!r)
            PyErr_Clear();
        Py_XDECREF(r);
    }
}

PyObject *set_closed_error(const char *what)
{
    PyObject *text = PyUnicode_FromString(what);
    if (text) {
        PyErr_SetObject(hooks.channel_closed, text);
        Py_DECREF(text);
    }
    return NULL;
}

PyObject *exception_text(PyObject *exc)
{
    PyObject *text = PyObject_Str(exc);
    if (!text) {
        PyErr_Clear();
        return PyUnicode_FromString("error");
    }
    if (PyUnicode_GET_LENGTH(text) == 0) {
        Py_DECREF(text);
        return PyUnicode_FromString(Py_TYPE(exc)->tp_name);
    }
    return text;
}

PyObject *report_exception(Server *srv, const char *what)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (!value) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return PyUnicode_FromString("error");
    }
    if (tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    if (!PyObject_IsInstance(value, PyExc_Exception)) {
        /* KeyboardInterrupt, SystemExit: not ours to swallow. The first one is raised again
         * once pulsec's callbacks have unwound (Server._tick). */
        if (srv && !srv->pending_exc)
            srv->pending_exc = Py_NewRef(value);
        PyObject *text = exception_text(value);
        Py_DECREF(value);
        return text;
    }
    if (hooks.denied && PyObject_IsInstance(value, hooks.denied) == 1) {
        /* A refusal the app decided on, not a failure: answered, not logged. */
        PyObject *reason = PyObject_GetAttrString(value, "reason");
        if (!reason || !PyUnicode_Check(reason)) {
            Py_XDECREF(reason);
            PyErr_Clear();
            reason = exception_text(value);
        }
        Py_DECREF(value);
        return reason;
    }
    PyObject *text = exception_text(value);
    if (hooks.log_exception) {
        PyObject *r = PyObject_CallFunction(hooks.log_exception, "sO", what, value);
        if (!r)
            PyErr_WriteUnraisable(hooks.log_exception);
        Py_XDECREF(r);
    } else {
        PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(value)), Py_NewRef(value),
                      PyException_GetTraceback(value));
        PyErr_WriteUnraisable(NULL);
    }
    Py_DECREF(value);
    return text;
}

static PyObject *mod_setup(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"channel_closed", "channel_timeout", "channel_error", "denied",
                            "log_exception",  "run_chain",       "build_view",    "handshake",
                            "message",        "current_view",    "in_request",    NULL};
    py_hooks h = {0};
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "OOOOOOOOOOO", names, &h.channel_closed, &h.channel_timeout, &h.channel_error,
            &h.denied, &h.log_exception, &h.run_chain, &h.build_view, &h.handshake_class,
            &h.message_class, &h.current_view, &h.in_request))
        return NULL;
    PyObject **dst = (PyObject **)&hooks, **src = (PyObject **)&h;
    for (size_t i = 0; i < sizeof hooks / sizeof(PyObject *); i++)
        Py_XSETREF(dst[i], Py_NewRef(src[i]));
    Py_RETURN_NONE;
}

static PyObject *mod_live_objects(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n}", "servers", live.servers, "views",
                         live.views, "channels", live.channels, "listeners", live.listeners,
                         "requests", live.requests, "replies", live.replies, "sessions",
                         live.sessions);
}

static PyObject *mod_set_log_level(PyObject *self, PyObject *arg)
{
    long level = PyLong_AsLong(arg);
    if (level == -1 && PyErr_Occurred())
        return NULL;
    if (level < PS_LOG_ERROR || level > PS_LOG_DEBUG) {
        PyErr_SetString(PyExc_ValueError, "log level must be 0 (error) .. 3 (debug)");
        return NULL;
    }
    ps_set_log_level((ps_log_level)level);
    Py_RETURN_NONE;
}

static PyObject *mod_to_json(PyObject *self, PyObject *obj)
{
    /* Round trip through jansson: what a payload becomes on the wire, for tests and users. */
    json_t *j = py_to_json(obj);
    if (!j)
        return NULL;
    PyObject *out = json_to_py(j);
    json_decref(j);
    return out;
}

static PyMethodDef mod_methods[] = {
    {"_setup", (PyCFunction)(void (*)(void))mod_setup, METH_VARARGS | METH_KEYWORDS,
     "Hands the Python half of the API to the core (pulsec/__init__.py calls it once)."},
    {"live_objects", mod_live_objects, METH_NOARGS,
     "Counts of the core's live objects by type, for leak checks."},
    {"set_log_level", mod_set_log_level, METH_O,
     "pulsec's own log threshold for its stderr log: 0 error, 1 warn (default), 2 info, 3 debug."},
    {"json_round_trip", mod_to_json, METH_O,
     "The value as a payload arrives: converted to JSON and back."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pulsec._core",
    .m_doc = "The C core of pulsec: libpulsec driven from asyncio (see docs/PYTHON.md).",
    .m_size = -1,
    .m_methods = mod_methods,
};

PyMODINIT_FUNC PyInit__core(void);
PyMODINIT_FUNC PyInit__core(void)
{
    /* Raw domain: thread-safe without the GIL, and traced by tracemalloc. Set before any
     * server exists, as ps_set_allocator requires (this copy of pulsec is ours alone). */
    ps_set_allocator(PyMem_RawMalloc, PyMem_RawRealloc, PyMem_RawFree);
    PyTypeObject *types[] = {&ServerType, &ViewType,    &ChannelType, &ListenerType,
                             &ReplyType,  &RequestType, &SessionType};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (!m)
        return NULL;
    const char *names[] = {"Server", "View", "Channel", "Cleanup", "Reply", "Request", "Session"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddStringConstant(m, "version", ps_version_string()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
