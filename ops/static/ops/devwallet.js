// Development only (make run): when no browser wallet is installed, an EIP-1193 provider that asks the back
// office's development bridge, which has the local anvil sign for the signed-in demo owner's registered key.
'use strict';
(function () {
  if (window.ethereum) return;
  const script = document.currentScript;
  const endpoint = script.dataset.endpoint;
  function csrf() {
    const input = document.querySelector('input[name="csrfmiddlewaretoken"]');
    return input ? input.value : '';
  }
  window.ethereum = {
    isBackOfficeDevWallet: true,
    async request({ method, params }) {
      const response = await fetch(endpoint, {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRFToken': csrf() },
        body: JSON.stringify({ method, params: params || [] }),
      });
      const body = await response.json();
      if (body.error) throw new Error('development wallet: ' + body.error);
      return body.result;
    },
  };
}());
