/*
 * view: View, one per attach. pulsec calls view_init when a client attaches a route: it runs
 * the view function with the View as the context's current view, so that ps.channel() and
 * every ps.State created meanwhile belong to it; an async view function runs in a task and the
 * attach is answered when it returns (ps_view_defer / ps_view_accept). dispose and the data
 * destructor end the States (on_dispose, once) and cut the channels off from the C objects.
 */
#include "binding.h"

/* ---- View ------------------------------------------------------------------------------ */

static void run_dispose(View *v)
{
    if (v->disposed)
        return;
    v->disposed = true;
    if (!v->states)
        return;
    PyObject *states = Py_NewRef(v->states);
    /* Newest first, as an exit stack: a later State may use an earlier one. */
    for (Py_ssize_t i = PyList_GET_SIZE(states) - 1; i >= 0; i--) {
        PyObject *state = PyList_GET_ITEM(states, i);
        PyObject *fn = PyObject_GetAttrString(state, "on_dispose");
        PyObject *r = fn ? PyObject_CallNoArgs(fn) : NULL;
        Py_XDECREF(fn);
        if (!r) {
            char what[PS_WHAT_LEN];
            snprintf(what, sizeof what, "on_dispose of a State of view %s raised",
                     PyUnicode_AsUTF8(v->path));
            PyObject *text = report_exception(v->server, what);
            Py_XDECREF(text);
            if (v->server->pending_exc)
                break;
            continue;
        }
        if (is_awaitable(r) && server_spawn(v->server, r, NULL) < 0) {
            PyObject *text = report_exception(v->server, "starting an async on_dispose");
            Py_XDECREF(text);
            discard_awaitable(r);
        }
        Py_DECREF(r);
    }
    Py_DECREF(states);
}

/* pulsec's data destructor of the view: after dispose and after every channel closed. */
static void view_gone(void *data)
{
    View *v = data;
    run_dispose(v); /* a view that never attached had no dispose: its States still end */
    v->view = NULL;
    v->building = false;
    if (v->channels)
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v->channels); i++)
            channel_gone((Channel *)PyList_GET_ITEM(v->channels, i));
    if (v->task) {
        PyObject *r = PyObject_CallMethod(v->task, "cancel", NULL);
        if (!r)
            PyErr_WriteUnraisable(v->task);
        Py_XDECREF(r);
        Py_CLEAR(v->task);
    }
    Py_CLEAR(v->states);
    Py_DECREF(v); /* pulsec's reference; the channels stay readable through other ones */
}

static View *view_new(Server *srv, PyObject *path, ps_view *pv)
{
    View *v = PyObject_GC_New(View, &ViewType);
    if (!v)
        return NULL;
    v->view = pv;
    v->server = (Server *)Py_NewRef(srv);
    v->states = PyList_New(0);
    v->channels = PyList_New(0);
    v->task = NULL;
    v->path = Py_NewRef(path);
    v->building = false;
    v->disposed = false;
    live.views++;
    PyObject_GC_Track(v);
    if (!v->states || !v->channels) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* Props from the view function: to JSON and set; on failure rejects the attach. 0 or -1. */
static int view_take_props(View *v, PyObject *props)
{
    json_t *j = py_to_json(props);
    if (!j) {
        char what[PS_WHAT_LEN];
        snprintf(what, sizeof what, "the props of view %s are not JSON", PyUnicode_AsUTF8(v->path));
        PyObject *text = report_exception(v->server, what);
        ps_view_reject(v->view, text ? PyUnicode_AsUTF8(text) : "Attach refused");
        Py_XDECREF(text);
        return -1;
    }
    ps_view_set_props(v->view, j);
    json_decref(j);
    return 0;
}

int view_init(ps_view *pv, json_t *props, void *user)
{
    PyObject *entry = user;
    Server *srv = (Server *)PyTuple_GET_ITEM(entry, 0);
    PyObject *fn = PyTuple_GET_ITEM(entry, 1);
    if (srv->pending_exc)
        return ps_view_reject(pv, "Server stopping");
    View *v = view_new(srv, PyTuple_GET_ITEM(entry, 2), pv);
    if (!v) {
        PyObject *text = report_exception(srv, "creating a view");
        Py_XDECREF(text);
        return ps_view_reject(pv, "Internal error");
    }
    ps_view_set_data(pv, v, view_gone); /* pulsec holds v's reference from here */
    PyObject *arg = json_to_py(props);
    PyObject *token = arg ? PyContextVar_Set(hooks.current_view, (PyObject *)v) : NULL;
    v->building = true;
    PyObject *r = token ? PyObject_CallOneArg(fn, arg) : NULL;
    if (token && PyContextVar_Reset(hooks.current_view, token) < 0) {
        Py_CLEAR(r);
    }
    Py_XDECREF(token);
    Py_XDECREF(arg);
    if (!r) {
        v->building = false;
        char what[PS_WHAT_LEN];
        snprintf(what, sizeof what, "the view function of %s raised", PyUnicode_AsUTF8(v->path));
        PyObject *text = report_exception(srv, what);
        int rc = ps_view_reject(pv, text ? PyUnicode_AsUTF8(text) : "Attach refused");
        Py_XDECREF(text);
        return rc;
    }
    if (is_awaitable(r)) {
        /* The coroutine's body runs in the task, in a context where it is the view being
         * built: States and ps.channel() there belong to this view too. */
        PyObject *ctx = PyContext_CopyCurrent();
        PyObject *coro = NULL;
        int ok = ctx && PyContext_Enter(ctx) == 0;
        if (ok) {
            PyObject *t = PyContextVar_Set(hooks.current_view, (PyObject *)v);
            ok = t != NULL;
            Py_XDECREF(t);
            PyContext_Exit(ctx);
        }
        if (ok)
            coro = PyObject_CallFunctionObjArgs(hooks.build_view, (PyObject *)v, r, NULL);
        PyObject *task = coro ? server_spawn_task(srv, coro, ctx) : NULL;
        Py_XDECREF(coro);
        Py_XDECREF(ctx);
        if (!task) {
            v->building = false;
            discard_awaitable(r);
            Py_DECREF(r);
            PyObject *text = report_exception(srv, "starting an async view function");
            int rc = ps_view_reject(pv, text ? PyUnicode_AsUTF8(text) : "Attach refused");
            Py_XDECREF(text);
            return rc;
        }
        Py_DECREF(r);
        v->task = task;
        return ps_view_defer(pv);
    }
    v->building = false;
    int rc = view_take_props(v, r);
    Py_DECREF(r);
    return rc < 0 ? PS_EDENIED : 0;
}

void view_dispose(ps_view *pv, void *user)
{
    View *v = ps_view_data(pv);
    if (v)
        run_dispose(v);
}

static PyObject *View_accept(View *v, PyObject *props)
{
    /* From pulsec.__init__._build_view, when the async view function returned. */
    v->building = false;
    Py_CLEAR(v->task);
    if (!v->view)
        Py_RETURN_NONE; /* gone meanwhile */
    if (view_take_props(v, props) == 0)
        ps_view_accept(v->view);
    if (server_after_call(v->server) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *View_reject(View *v, PyObject *text)
{
    v->building = false;
    Py_CLEAR(v->task);
    if (!PyUnicode_Check(text))
        return PyErr_Format(PyExc_TypeError, "reject needs a str");
    if (v->view)
        ps_view_reject(v->view, PyUnicode_AsUTF8(text));
    if (server_after_call(v->server) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *View_adopt(View *v, PyObject *state)
{
    if (v->states && PyList_Append(v->states, state) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *View_open_channel(View *v, PyObject *unused)
{
    if (server_check_thread(v->server) < 0)
        return NULL;
    ps_channel *ch = v->view ? ps_channel_open(v->view) : NULL;
    if (!ch) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot open a channel: the view is closing, or its session has "
                        "max_channels_per_session channels open");
        return NULL;
    }
    PyObject *c = channel_new(v, ch);
    if (!c || PyList_Append(v->channels, c) < 0) {
        Py_XDECREF(c);
        return NULL;
    }
    return c;
}

static PyObject *View_set_props(View *v, PyObject *props)
{
    if (!v->view || ps_view_closed(v->view))
        return set_closed_error("view closed");
    if (server_check_thread(v->server) < 0)
        return NULL;
    json_t *j = py_to_json(props);
    if (!j)
        return NULL;
    ps_view_set_props(v->view, j);
    json_decref(j);
    if (server_after_call(v->server) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *View_close(View *v, PyObject *unused)
{
    if (!v->view || ps_view_closed(v->view))
        Py_RETURN_NONE;
    if (server_check_thread(v->server) < 0)
        return NULL;
    Py_INCREF(v);
    ps_view_close(v->view);
    int rc = server_after_call(v->server);
    Py_DECREF(v);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *View_get_props(View *v, void *closure)
{
    if (!v->view)
        Py_RETURN_NONE;
    return json_to_py(ps_view_props(v->view));
}

static PyObject *View_get_closed(View *v, void *closure)
{
    return PyBool_FromLong(!v->view || ps_view_closed(v->view));
}

static PyObject *View_get_building(View *v, void *closure)
{
    return PyBool_FromLong(v->building && v->view);
}

static PyObject *View_get_session(View *v, void *closure)
{
    if (!v->view)
        Py_RETURN_NONE;
    return session_get(v->server, ps_view_session(v->view));
}

static PyObject *View_get_channels(View *v, void *closure)
{
    return v->channels ? PyList_AsTuple(v->channels) : PyTuple_New(0);
}

static PyObject *View_repr(View *v)
{
    return PyUnicode_FromFormat("<pulsec.View %U%s>", v->path,
                                !v->view || ps_view_closed(v->view) ? " closed" : "");
}

static int View_traverse(View *v, visitproc visit, void *arg)
{
    Py_VISIT(v->server);
    Py_VISIT(v->states);
    Py_VISIT(v->channels);
    Py_VISIT(v->task);
    return 0;
}

static int View_clear(View *v)
{
    Py_CLEAR(v->states);
    Py_CLEAR(v->channels);
    Py_CLEAR(v->task);
    return 0;
}

static void View_dealloc(View *v)
{
    PyObject_GC_UnTrack(v);
    View_clear(v);
    Py_CLEAR(v->server);
    Py_CLEAR(v->path);
    live.views--;
    PyObject_GC_Del(v);
}

static PyMethodDef View_methods[] = {
    {"set_props", (PyCFunction)View_set_props, METH_O,
     "Pushes new props to the client (view_props)."},
    {"close", (PyCFunction)View_close, METH_NOARGS,
     "Ends the view from the server, as a detach would."},
    {"_accept", (PyCFunction)View_accept, METH_O, NULL},
    {"_reject", (PyCFunction)View_reject, METH_O, NULL},
    {"_adopt", (PyCFunction)View_adopt, METH_O, NULL},
    {"_open_channel", (PyCFunction)View_open_channel, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef View_members[] = {
    {"path", T_OBJECT, offsetof(View, path), READONLY, "The route's path."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef View_getset[] = {
    {"props", (getter)View_get_props, NULL, "The props the client has (None once gone).", NULL},
    {"closed", (getter)View_get_closed, NULL, "The view went away.", NULL},
    {"session", (getter)View_get_session, NULL, "The connection the view belongs to.", NULL},
    {"channels", (getter)View_get_channels, NULL, "The channels the view opened.", NULL},
    {"_building", (getter)View_get_building, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ViewType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pulsec.View",
    .tp_basicsize = sizeof(View),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A mounted view: what ps.current_view() returns inside a view function.",
    .tp_dealloc = (destructor)View_dealloc,
    .tp_traverse = (traverseproc)View_traverse,
    .tp_clear = (inquiry)View_clear,
    .tp_repr = (reprfunc)View_repr,
    .tp_members = View_members,
    .tp_getset = View_getset,
    .tp_methods = View_methods,
};
