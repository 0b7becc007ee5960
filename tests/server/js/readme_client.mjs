// The JavaScript client of the Go package's README (its TypeScript with the type
// annotations removed, nothing else changed in the class), run against a wsspec server with
// Node's browser-compatible WebSocket (node --experimental-websocket). Every message is
// parsed with JSON.parse(event.data): one JSON object per frame, or this fails.
//
// usage: node --experimental-websocket readme_client.mjs ws://HOST:PORT/ws

class WebSocketClient {
    ws;
    messageHandlers = new Map();
    subscriptions = new Map();

    constructor(url) {
        this.ws = new WebSocket(url);
        this.ws.onmessage = (event) => this.handleMessage(event);
    }

    // Send request and wait for response
    async request(operation, entity, options) {
        const id = this.generateId();

        return new Promise((resolve, reject) => {
            this.messageHandlers.set(id, (data) => {
                if (data.success) {
                    resolve(data.data);
                } else {
                    reject(data.error);
                }
            });

            this.ws.send(JSON.stringify({
                id,
                type: "request",
                operation,
                entity,
                ...options
            }));
        });
    }

    // Subscribe to entity changes
    async subscribe(entity, filters, callback) {
        const id = this.generateId();

        return new Promise((resolve, reject) => {
            this.messageHandlers.set(id, (data) => {
                if (data.success) {
                    const subId = data.data.subscription_id;
                    if (callback) {
                        this.subscriptions.set(subId, callback);
                    }
                    resolve(subId);
                } else {
                    reject(data.error);
                }
            });

            this.ws.send(JSON.stringify({
                id,
                type: "subscription",
                operation: "subscribe",
                entity,
                options: { filters }
            }));
        });
    }

    handleMessage(event) {
        const message = JSON.parse(event.data);

        if (message.type === "response") {
            const handler = this.messageHandlers.get(message.id);
            if (handler) {
                handler(message);
                this.messageHandlers.delete(message.id);
            }
        } else if (message.type === "notification") {
            const callback = this.subscriptions.get(message.subscription_id);
            if (callback) {
                callback(message);
            }
        }
    }

    generateId() {
        return `msg-${Date.now()}-${Math.random().toString(36).substr(2, 9)}`;
    }
}

// --- the README's usage, then checks ---------------------------------------------------

const url = process.argv[2];
const opened = (client) => new Promise((resolve, reject) => {
    client.ws.onopen = resolve;
    client.ws.onerror = reject;
});
const client = new WebSocketClient(url);
const watcher = new WebSocketClient(url);
await Promise.all([opened(client), opened(watcher)]);

const notifications = [];
let sawCarol;
const allSeen = new Promise((resolve) => { sawCarol = resolve; });
const subId = await watcher.subscribe("users",
    [{ column: "status", operator: "eq", value: "active" }],
    (notification) => {
        notifications.push(notification);
        if (notification.data.name === "Carol") sawCarol();
    }
);

// Pipelined, as the README's client does: no await between the requests.
const writes = [
    client.request("create", "users", { data: { name: "Alice", email: "alice@example.com", status: "active" } }),
    client.request("create", "users", { data: { name: "Bob", email: "bob@example.com", status: "inactive" } }),
    client.request("create", "users", { data: { name: "Carol", email: "carol@example.com", status: "active" } }),
];
const created = await Promise.all(writes);
await allSeen;

const users = await client.request("read", "users", {
    options: {
        filters: [{ column: "status", operator: "eq", value: "active" }],
        limit: 10
    }
});
let refused = null;
try {
    await client.request("read", "users", { record_id: "999" });
} catch (error) {
    refused = error;
}

console.log(JSON.stringify({
    created: created.map((u) => u.name),
    ids: created.map((u) => typeof u.id),
    notified: notifications.map((n) => [n.operation, n.data.name, n.subscription_id === subId]),
    active: users.map((u) => u.name),
    refused: refused && refused.code,
}));
client.ws.close();
watcher.ws.close();
