/*
 * channel: Channel (what ps.channel() returns), Cleanup (what channel.on() returns), Reply (a
 * client request that an async handler answers later) and Request (a server request in flight,
 * an asyncio future), and the dispatch of client messages.
 *
 * Dispatch follows the seed's rules: handlers of the event run in registration order; a handler
 * may be sync or async; for a request the first handler that returns something other than None
 * answers it, an exception answers with its text, and no answer answers None. While handlers
 * are sync, everything happens inside pulsec's callback; the first that returns an awaitable
 * hands the rest of the chain, with the kept reply, to a task (pulsec.__init__._run_chain).
 */
#include "binding.h"

/* ---- Listener -------------------------------------------------------------------------- */

typedef struct Listener {
    PyObject ob_base;
    Channel *channel; /* NULL once removed */
    PyObject *event;
    PyObject *handler; /* NULL once removed */
} Listener;

static void listener_remove(Listener *l)
{
    Channel *c = l->channel;
    if (!c)
        return;
    l->channel = NULL;
    PyObject *handler = l->handler;
    l->handler = NULL;
    if (c->handlers) {
        PyObject *list = PyDict_GetItemWithError(c->handlers, l->event);
        if (list) {
            Py_ssize_t n = PyList_GET_SIZE(list);
            for (Py_ssize_t i = 0; i < n; i++) {
                if (PyList_GET_ITEM(list, i) == (PyObject *)l) {
                    PySequence_DelItem(list, i);
                    break;
                }
            }
            if (PyList_GET_SIZE(list) == 0)
                PyDict_DelItem(c->handlers, l->event);
        }
        PyErr_Clear();
    }
    Py_XDECREF(handler);
    Py_DECREF(c);
}

static PyObject *Listener_call(Listener *l, PyObject *args, PyObject *kw)
{
    if ((kw && PyDict_GET_SIZE(kw)) || !PyArg_ParseTuple(args, ":cleanup")) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cleanup() takes no arguments");
        return NULL;
    }
    listener_remove(l);
    Py_RETURN_NONE;
}

static PyObject *Listener_get_removed(Listener *l, void *closure)
{
    return PyBool_FromLong(l->channel == NULL);
}

static PyObject *Listener_get_handler(Listener *l, void *closure)
{
    return Py_NewRef(l->handler ? l->handler : Py_None);
}

static PyObject *Listener_repr(Listener *l)
{
    return PyUnicode_FromFormat("<pulsec cleanup for %R%s>", l->event,
                                l->channel ? "" : " (removed)");
}

static int Listener_traverse(Listener *l, visitproc visit, void *arg)
{
    Py_VISIT(l->channel);
    Py_VISIT(l->handler);
    return 0;
}

static int Listener_clear(Listener *l)
{
    Py_CLEAR(l->channel);
    Py_CLEAR(l->handler);
    return 0;
}

static void Listener_dealloc(Listener *l)
{
    PyObject_GC_UnTrack(l);
    Listener_clear(l);
    Py_CLEAR(l->event);
    live.listeners--;
    PyObject_GC_Del(l);
}

static PyMemberDef Listener_members[] = {
    {"event", T_OBJECT, offsetof(Listener, event), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Listener_getset[] = {
    {"removed", (getter)Listener_get_removed, NULL, "cleanup() ran, or the channel is gone.", NULL},
    {"handler", (getter)Listener_get_handler, NULL, "The handler, None once removed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ListenerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pulsec.Cleanup",
    .tp_basicsize = sizeof(Listener),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What channel.on() returns: call it to remove the handler (idempotent).",
    .tp_call = (ternaryfunc)Listener_call,
    .tp_dealloc = (destructor)Listener_dealloc,
    .tp_traverse = (traverseproc)Listener_traverse,
    .tp_clear = (inquiry)Listener_clear,
    .tp_repr = (reprfunc)Listener_repr,
    .tp_members = Listener_members,
    .tp_getset = Listener_getset,
};

/* ---- Reply ----------------------------------------------------------------------------- */

typedef struct Reply {
    PyObject ob_base;
    ps_reply *kept; /* NULL once answered */
    Server *server;
} Reply;

static PyObject *reply_new(Server *srv, ps_reply *reply)
{
    Reply *r = PyObject_New(Reply, &ReplyType);
    if (!r)
        return NULL;
    r->kept = ps_reply_keep(reply);
    r->server = (Server *)Py_NewRef(srv);
    live.replies++;
    return (PyObject *)r;
}

static PyObject *Reply_ok(Reply *r, PyObject *args)
{
    PyObject *value = Py_None;
    if (!PyArg_ParseTuple(args, "|O:ok", &value))
        return NULL;
    if (!r->kept)
        Py_RETURN_FALSE;
    if (server_check_thread(r->server) < 0)
        return NULL;
    json_t *j = py_to_json(value);
    if (!j)
        return NULL; /* still unanswered: the caller answers with the error */
    ps_reply *kept = r->kept;
    r->kept = NULL;
    int rc = ps_reply_ok(kept, j);
    json_decref(j);
    if (server_after_call(r->server) < 0)
        return NULL;
    return PyBool_FromLong(rc == 0);
}

static void reply_answer_error(Reply *r, const char *text)
{
    if (r->kept) {
        ps_reply *kept = r->kept;
        r->kept = NULL;
        ps_reply_error(kept, text);
    }
}

static PyObject *Reply_error(Reply *r, PyObject *args)
{
    const char *text;
    if (!PyArg_ParseTuple(args, "s:error", &text))
        return NULL;
    if (!r->kept)
        Py_RETURN_FALSE;
    if (server_check_thread(r->server) < 0)
        return NULL;
    ps_reply *kept = r->kept;
    r->kept = NULL;
    int rc = ps_reply_error(kept, text);
    if (server_after_call(r->server) < 0)
        return NULL;
    return PyBool_FromLong(rc == 0);
}

static void Reply_dealloc(Reply *r)
{
    if (r->kept) {
        /* Never answered (its task died unexpectedly): the client still gets its null, and the
         * kept handle goes back to pulsec exactly once. */
        ps_reply_ok(r->kept, NULL);
        if (server_after_call(r->server) < 0)
            PyErr_WriteUnraisable((PyObject *)r);
    }
    Py_CLEAR(r->server);
    live.replies--;
    PyObject_Free(r);
}

static PyMethodDef Reply_methods[] = {
    {"ok", (PyCFunction)Reply_ok, METH_VARARGS,
     "Answers with a JSON value; False if another answer won or the channel closed."},
    {"error", (PyCFunction)Reply_error, METH_VARARGS, "Answers with an error text."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ReplyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pulsec._core.Reply",
    .tp_basicsize = sizeof(Reply),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A client request that an async handler answers later (internal).",
    .tp_dealloc = (destructor)Reply_dealloc,
    .tp_methods = Reply_methods,
};

/* ---- Request --------------------------------------------------------------------------- */

typedef struct Request {
    PyObject ob_base;
    Server *server;
    ps_channel *ch; /* valid while pending */
    PyObject *future;
    PyObject *event;
    double timeout; /* seconds, 0 = none */
    bool pending;   /* pulsec still owes the completion */
} Request;

static void request_set(Request *req, const char *method, PyObject *value)
{
    PyObject *done = PyObject_CallMethod(req->future, "done", NULL);
    if (done == Py_False) {
        PyObject *r = PyObject_CallMethod(req->future, method, "O", value);
        if (!r)
            PyErr_WriteUnraisable(req->future);
        Py_XDECREF(r);
    } else if (!done) {
        PyErr_WriteUnraisable(req->future);
    }
    Py_XDECREF(done);
}

static void request_fail(Request *req, PyObject *cls, PyObject *text)
{
    PyObject *exc = text ? PyObject_CallOneArg(cls, text) : NULL;
    if (exc)
        request_set(req, "set_exception", exc);
    else
        PyErr_WriteUnraisable(req->future);
    Py_XDECREF(exc);
    Py_XDECREF(text);
}

static void on_response(ps_channel *ch, int status, json_t *payload, const char *error, void *user)
{
    Request *req = user;
    req->pending = false;
    req->ch = NULL;
    switch (status) {
    case PS_OK: {
        PyObject *v = json_to_py(payload);
        if (v)
            request_set(req, "set_result", v);
        else
            PyErr_WriteUnraisable(req->future);
        Py_XDECREF(v);
        break;
    }
    case PS_ETIMEDOUT: {
        PyObject *t = PyFloat_FromDouble(req->timeout);
        request_fail(req, hooks.channel_timeout,
                     t ? PyUnicode_FromFormat("no answer to %R within %R s", req->event, t) : NULL);
        Py_XDECREF(t);
        break;
    }
    case PS_EREMOTE:
        request_fail(req, hooks.channel_error, PyUnicode_FromString(error ? error : "error"));
        break;
    case PS_ECANCELED: break; /* the future was cancelled: that is its outcome */
    case PS_ECLOSED:
    default:
        request_fail(req, hooks.channel_closed,
                     PyUnicode_FromFormat("the channel closed before %R was answered", req->event));
        break;
    }
    Py_DECREF(req); /* pulsec's reference */
}

static PyObject *Request_on_done(Request *req, PyObject *future)
{
    if (!req->pending)
        Py_RETURN_NONE;
    PyObject *c = PyObject_CallMethod(future, "cancelled", NULL);
    if (!c)
        return NULL;
    bool cancelled = c == Py_True;
    Py_DECREF(c);
    if (cancelled && req->server->srv) {
        Py_INCREF(req);
        ps_request_cancel(req->ch, on_response, req); /* on_response drops pulsec's ref */
        int rc = server_after_call(req->server);
        Py_DECREF(req);
        if (rc < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static int Request_traverse(Request *req, visitproc visit, void *arg)
{
    Py_VISIT(req->future);
    return 0;
}

static int Request_clear(Request *req)
{
    Py_CLEAR(req->future);
    return 0;
}

static void Request_dealloc(Request *req)
{
    PyObject_GC_UnTrack(req);
    Request_clear(req);
    Py_CLEAR(req->event);
    Py_CLEAR(req->server);
    live.requests--;
    PyObject_GC_Del(req);
}

static PyMethodDef Request_methods[] = {
    {"_on_done", (PyCFunction)Request_on_done, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

PyTypeObject RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pulsec._core.Request",
    .tp_basicsize = sizeof(Request),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A server request in flight (internal).",
    .tp_dealloc = (destructor)Request_dealloc,
    .tp_traverse = (traverseproc)Request_traverse,
    .tp_clear = (inquiry)Request_clear,
    .tp_methods = Request_methods,
};

/* ---- Channel --------------------------------------------------------------------------- */

PyObject *channel_new(View *v, ps_channel *ch)
{
    Channel *c = PyObject_GC_New(Channel, &ChannelType);
    if (!c)
        return NULL;
    c->ch = ch;
    c->view = (View *)Py_NewRef(v);
    c->id = PyUnicode_FromString(ps_channel_id(ch));
    c->handlers = PyDict_New();
    c->listening = false;
    live.channels++;
    PyObject_GC_Track(c);
    if (!c->id || !c->handlers) {
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

void channel_gone(Channel *c)
{
    c->ch = NULL;
    /* Drop the handlers, and with them the cycles State -> channel -> handler -> State. */
    PyObject *handlers = c->handlers;
    c->handlers = PyDict_New();
    if (!c->handlers)
        PyErr_Clear(); /* dispatch never runs again: an empty slot is as good */
    if (!handlers)
        return;
    PyObject *k, *list;
    Py_ssize_t pos = 0;
    while (PyDict_Next(handlers, &pos, &k, &list)) {
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(list); j++) {
            Listener *l = (Listener *)PyList_GET_ITEM(list, j);
            Channel *lc = l->channel;
            l->channel = NULL;
            Py_CLEAR(l->handler);
            Py_XDECREF(lc);
        }
    }
    Py_DECREF(handlers);
}

static Server *channel_server(Channel *c)
{
    return c->view ? c->view->server : NULL;
}

/* The channel may be used: open, and on the loop's thread. Raises otherwise. */
static int channel_usable(Channel *c)
{
    if (!c->ch || ps_channel_closed(c->ch)) {
        set_closed_error("channel closed");
        return -1;
    }
    return server_check_thread(channel_server(c));
}

static void dispatch(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                     void *user)
{
    Channel *c = user;
    Server *srv = channel_server(c);
    if (!srv || srv->pending_exc)
        return; /* a KeyboardInterrupt is on its way out: no more user code */
    PyObject *key = PyUnicode_FromString(event);
    PyObject *list = key ? PyDict_GetItemWithError(c->handlers, key) : NULL;
    Py_XDECREF(key);
    if (!list || PyList_GET_SIZE(list) == 0) {
        if (PyErr_Occurred())
            PyErr_WriteUnraisable((PyObject *)c);
        return; /* no handler: pulsec answers null */
    }
    /* A copy: handlers may add and remove handlers meanwhile. */
    PyObject *snapshot = PyList_AsTuple(list);
    PyObject *arg = snapshot ? json_to_py(payload) : NULL;
    if (!arg) {
        Py_XDECREF(snapshot);
        PyObject *text = report_exception(srv, "converting a payload");
        if (reply && text)
            ps_reply_error(reply, PyUnicode_AsUTF8(text));
        Py_XDECREF(text);
        return;
    }
    /* ps.is_request() for the handlers, and for the task of an async chain (a task copies the
     * context it is created in). */
    PyObject *token = PyContextVar_Set(hooks.in_request, reply ? Py_True : Py_False);
    if (!token)
        PyErr_WriteUnraisable((PyObject *)c);
    Py_INCREF(c);
    Py_ssize_t n = PyTuple_GET_SIZE(snapshot);
    for (Py_ssize_t i = 0; i < n; i++) {
        Listener *l = (Listener *)PyTuple_GET_ITEM(snapshot, i);
        if (!l->handler)
            continue; /* removed meanwhile */
        if (!c->ch || ps_channel_closed(ch))
            break; /* closed by an earlier handler: the rest do not run */
        PyObject *r = PyObject_CallOneArg(l->handler, arg);
        if (!r) {
            char what[PS_WHAT_LEN];
            snprintf(what, sizeof what, "the handler of '%.100s' on channel %s raised", event,
                     ps_channel_id(ch));
            PyObject *text = report_exception(srv, what);
            if (reply && text && !srv->pending_exc)
                ps_reply_error(reply, PyUnicode_AsUTF8(text));
            Py_XDECREF(text);
            if (reply || srv->pending_exc)
                break;
            continue; /* an event: the other handlers still run */
        }
        if (is_awaitable(r)) {
            PyObject *rest = PyTuple_GetSlice(snapshot, i + 1, n);
            PyObject *rep = NULL;
            if (rest)
                rep = reply ? reply_new(srv, reply) : Py_NewRef(Py_None);
            PyObject *coro = rep ? PyObject_CallFunctionObjArgs(hooks.run_chain, r, rest, arg, rep,
                                                                (PyObject *)c, NULL)
                                 : NULL;
            if (!coro || server_spawn(srv, coro, NULL) < 0) {
                PyObject *text = report_exception(srv, "starting an async handler");
                const char *t = text ? PyUnicode_AsUTF8(text) : "error";
                if (rep && rep != Py_None)
                    reply_answer_error((Reply *)rep, t ? t : "error");
                else if (reply)
                    ps_reply_error(reply, t ? t : "error");
                Py_XDECREF(text);
                if (coro)
                    discard_awaitable(coro);
                discard_awaitable(r);
            }
            Py_XDECREF(coro);
            Py_XDECREF(rep);
            Py_XDECREF(rest);
            Py_DECREF(r);
            break;
        }
        if (r != Py_None && reply) {
            json_t *j = py_to_json(r);
            if (j) {
                ps_reply_ok(reply, j);
                json_decref(j);
            } else {
                char what[PS_WHAT_LEN];
                snprintf(what, sizeof what, "the answer to '%.100s' on channel %s is not JSON",
                         event, ps_channel_id(ch));
                PyObject *text = report_exception(srv, what);
                if (text)
                    ps_reply_error(reply, PyUnicode_AsUTF8(text));
                Py_XDECREF(text);
            }
            Py_DECREF(r);
            break;
        }
        Py_DECREF(r); /* an event's return value means nothing */
    }
    if (token) {
        if (PyContextVar_Reset(hooks.in_request, token) < 0)
            PyErr_WriteUnraisable((PyObject *)c);
        Py_DECREF(token);
    }
    Py_DECREF(arg);
    Py_DECREF(snapshot);
    Py_DECREF(c);
}

static PyObject *Channel_on(Channel *c, PyObject *args)
{
    PyObject *event, *handler;
    if (!PyArg_ParseTuple(args, "UO:on", &event, &handler))
        return NULL;
    if (!PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "handler must be callable");
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(event) == 0) {
        PyErr_SetString(PyExc_ValueError, "event must be a non-empty str");
        return NULL;
    }
    if (channel_usable(c) < 0)
        return NULL;
    if (!c->listening) {
        if (!ps_on(c->ch, "*", dispatch, c))
            return set_closed_error("channel closed");
        c->listening = true;
    }
    PyObject *list = PyDict_GetItemWithError(c->handlers, event);
    if (!list) {
        if (PyErr_Occurred())
            return NULL;
        list = PyList_New(0);
        if (!list || PyDict_SetItem(c->handlers, event, list) < 0) {
            Py_XDECREF(list);
            return NULL;
        }
        Py_DECREF(list);
    }
    Listener *l = PyObject_GC_New(Listener, &ListenerType);
    if (!l)
        return NULL;
    l->channel = (Channel *)Py_NewRef(c);
    l->event = Py_NewRef(event);
    l->handler = Py_NewRef(handler);
    live.listeners++;
    PyObject_GC_Track(l);
    if (PyList_Append(list, (PyObject *)l) < 0) {
        Py_DECREF(l);
        return NULL;
    }
    return (PyObject *)l;
}

static PyObject *Channel_emit(Channel *c, PyObject *args, PyObject *kw)
{
    static char *names[] = {"event", "payload", NULL};
    const char *event;
    PyObject *payload = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|O:emit", names, &event, &payload))
        return NULL;
    if (channel_usable(c) < 0)
        return NULL;
    json_t *j = py_to_json(payload);
    if (!j)
        return NULL;
    int rc = ps_emit(c->ch, event, j);
    json_decref(j);
    if (server_after_call(channel_server(c)) < 0)
        return NULL;
    if (rc == PS_ECLOSED)
        return set_closed_error("channel closed");
    if (rc != 0)
        return PyErr_Format(PyExc_ValueError, "cannot emit %s: %s", event, ps_strerror(rc));
    Py_RETURN_NONE;
}

static PyObject *Channel_request(Channel *c, PyObject *args, PyObject *kw)
{
    static char *names[] = {"event", "payload", "timeout", NULL};
    PyObject *event, *payload = Py_None, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|OO:request", names, &event, &payload, &timeout))
        return NULL;
    double t = 0;
    uint32_t ms = 0;
    if (timeout != Py_None) {
        t = PyFloat_AsDouble(timeout);
        if (t == -1 && PyErr_Occurred())
            return NULL;
        if (!(t >= 0) || t > 4e6) {
            PyErr_SetString(PyExc_ValueError, "timeout must be None or 0..4e6 seconds");
            return NULL;
        }
        double x = t * 1000.0;
        ms = x < 1 ? 1 : (uint32_t)(x + 0.999); /* never 0: that would mean "no timeout" */
    }
    if (channel_usable(c) < 0)
        return NULL;
    Server *srv = channel_server(c);
    json_t *j = py_to_json(payload);
    if (!j)
        return NULL;
    Request *req = PyObject_GC_New(Request, &RequestType);
    if (!req) {
        json_decref(j);
        return NULL;
    }
    req->server = (Server *)Py_NewRef(srv);
    req->ch = c->ch;
    req->event = Py_NewRef(event);
    req->timeout = t;
    req->pending = false;
    req->future = PyObject_CallMethod(srv->aloop, "create_future", NULL);
    live.requests++;
    PyObject_GC_Track(req);
    if (!req->future) {
        json_decref(j);
        Py_DECREF(req);
        return NULL;
    }
    int rc = ps_request(c->ch, PyUnicode_AsUTF8(event), j, ms, on_response, req);
    json_decref(j);
    if (rc != 0) {
        Py_DECREF(req);
        if (rc == PS_ECLOSED)
            return set_closed_error("channel closed");
        if (rc == PS_ELIMIT)
            return PyErr_Format(hooks.channel_error, "too many requests in flight on this channel "
                                                     "(max_pending_requests)");
        return PyErr_Format(PyExc_ValueError, "cannot send request %R: %s", event, ps_strerror(rc));
    }
    req->pending = true;
    Py_INCREF(req); /* pulsec's, until on_response */
    PyObject *done = PyObject_GetAttrString((PyObject *)req, "_on_done");
    PyObject *r = done ? PyObject_CallMethod(req->future, "add_done_callback", "O", done) : NULL;
    Py_XDECREF(done);
    PyObject *future = Py_NewRef(req->future);
    Py_DECREF(req);
    if (!r || server_after_call(srv) < 0) {
        Py_XDECREF(r);
        Py_DECREF(future);
        return NULL;
    }
    Py_DECREF(r);
    return future;
}

static PyObject *Channel_join(Channel *c, PyObject *arg)
{
    const char *topic = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!topic)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "topic must be a str");
    if (channel_usable(c) < 0)
        return NULL;
    int rc = ps_join(c->ch, topic);
    if (rc == PS_ECLOSED)
        return set_closed_error("channel closed");
    if (rc == PS_ELIMIT)
        return PyErr_Format(hooks.channel_error,
                            "too many topics (max_topics_per_channel or max_topics)");
    if (rc != 0)
        return PyErr_Format(PyExc_ValueError, "invalid topic %R (1 to %d bytes)", arg,
                            PS_TOPIC_MAX);
    Py_RETURN_NONE;
}

static PyObject *Channel_leave(Channel *c, PyObject *arg)
{
    const char *topic = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!topic)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "topic must be a str");
    if (!c->ch || ps_channel_closed(c->ch))
        Py_RETURN_FALSE; /* a closed channel is in no topic */
    if (server_check_thread(channel_server(c)) < 0)
        return NULL;
    int rc = ps_leave(c->ch, topic);
    if (rc == PS_EINVAL)
        return PyErr_Format(PyExc_ValueError, "invalid topic %R", arg);
    return PyBool_FromLong(rc == 0);
}

static PyObject *Channel_close(Channel *c, PyObject *unused)
{
    if (!c->ch || ps_channel_closed(c->ch))
        Py_RETURN_NONE;
    if (server_check_thread(channel_server(c)) < 0)
        return NULL;
    ps_channel_close(c->ch); /* pending requests fail with ChannelClosed, right here */
    if (server_after_call(channel_server(c)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Channel_get_closed(Channel *c, void *closure)
{
    return PyBool_FromLong(!c->ch || ps_channel_closed(c->ch));
}

static PyObject *Channel_get_view(Channel *c, void *closure)
{
    return Py_NewRef(c->view ? (PyObject *)c->view : Py_None);
}

static PyObject *Channel_repr(Channel *c)
{
    return PyUnicode_FromFormat("<pulsec.Channel %U%s>", c->id,
                                !c->ch || ps_channel_closed(c->ch) ? " closed" : "");
}

static int Channel_traverse(Channel *c, visitproc visit, void *arg)
{
    Py_VISIT(c->view);
    Py_VISIT(c->handlers);
    return 0;
}

static int Channel_clear(Channel *c)
{
    Py_CLEAR(c->view);
    Py_CLEAR(c->handlers);
    return 0;
}

static void Channel_dealloc(Channel *c)
{
    PyObject_GC_UnTrack(c);
    Channel_clear(c);
    Py_CLEAR(c->id);
    live.channels--;
    PyObject_GC_Del(c);
}

static PyMethodDef Channel_methods[] = {
    {"on", (PyCFunction)Channel_on, METH_VARARGS,
     "on(event, handler) -> cleanup: handler(payload), sync or async."},
    {"emit", (PyCFunction)(void (*)(void))Channel_emit, METH_VARARGS | METH_KEYWORDS,
     "emit(event, payload=None): fire and forget; ChannelClosed when closed."},
    {"request", (PyCFunction)(void (*)(void))Channel_request, METH_VARARGS | METH_KEYWORDS,
     "request(event, payload=None, timeout=None) -> awaitable of the client's answer."},
    {"join", (PyCFunction)Channel_join, METH_O,
     "join(topic): app.publish(topic, ...) reaches this channel too, until leave or close."},
    {"leave", (PyCFunction)Channel_leave, METH_O,
     "leave(topic) -> bool: False if the channel was not in the topic."},
    {"close", (PyCFunction)Channel_close, METH_NOARGS,
     "Closes the channel: pending requests fail with ChannelClosed, the client is told."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Channel_members[] = {
    {"id", T_OBJECT, offsetof(Channel, id), READONLY, "The id to hand to the client."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Channel_getset[] = {
    {"closed", (getter)Channel_get_closed, NULL, "True once the channel is closed.", NULL},
    {"view", (getter)Channel_get_view, NULL, "The view that opened the channel.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ChannelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pulsec.Channel",
    .tp_basicsize = sizeof(Channel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A bidirectional channel owned by a view (made by ps.channel()).",
    .tp_dealloc = (destructor)Channel_dealloc,
    .tp_traverse = (traverseproc)Channel_traverse,
    .tp_clear = (inquiry)Channel_clear,
    .tp_repr = (reprfunc)Channel_repr,
    .tp_members = Channel_members,
    .tp_getset = Channel_getset,
    .tp_methods = Channel_methods,
};
