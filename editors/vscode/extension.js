// Starts `dslc lsp` (the command in the `dslc.command` setting) as the language server of `.dl` files.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("dslc").get("command");
  client = new LanguageClient(
    "dslc",
    "dslc",
    { command, args },
    { documentSelector: [{ scheme: "file", language: "dl" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
