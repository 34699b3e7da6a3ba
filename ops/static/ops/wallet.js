// Signing through the staff member's own browser wallet (EIP-1193: window.ethereum). The server never sees a key:
// the wallet signs the EIP-712 typed data the page shows (eth_signTypedData_v4), or the key-registration
// challenge (personal_sign), and the page submits only the signature.
'use strict';
(function () {
  function say(text, bad) {
    const el = document.getElementById('wallet-status');
    if (el) { el.textContent = text; el.className = bad ? 'errornote' : 'help'; }
  }

  async function walletAccount(allowed) {
    const eth = window.ethereum;
    if (!eth || typeof eth.request !== 'function') {
      throw new Error('No browser wallet found: install or unlock an EIP-1193 wallet, or paste a signature made by another tool.');
    }
    const accounts = (await eth.request({ method: 'eth_requestAccounts' })).map((a) => a.toLowerCase());
    if (!allowed || allowed.length === 0) return accounts[0];
    const match = accounts.find((a) => allowed.includes(a));
    if (!match) {
      throw new Error('The wallet offers ' + accounts.join(', ') + ', none of which is your registered key (' +
                      allowed.join(', ') + '): switch accounts in the wallet.');
    }
    return match;
  }

  function utf8Hex(text) {
    return '0x' + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function signTyped(button) {
    const form = button.closest('form');
    const allowed = (button.dataset.keys || '').split(',').filter(Boolean);
    const account = await walletAccount(allowed);
    const sets = form.querySelectorAll('[data-typed-data]');
    let n = 0;
    for (const set of sets) {
      const typed = document.getElementById(set.dataset.typedData).textContent;
      n += 1;
      say('Waiting for the wallet: signature ' + n + ' of ' + sets.length + ' with ' + account + '…');
      const signature = await window.ethereum.request({ method: 'eth_signTypedData_v4', params: [account, typed] });
      form.querySelector('[name="' + set.dataset.prefix + '-signature"]').value = signature;
      form.querySelector('[name="' + set.dataset.prefix + '-source"]').value = 'wallet';
    }
    say('Signed; submitting…');
    form.submit();
  }

  async function signMessage(button) {
    const form = button.closest('form');
    const account = await walletAccount([]);
    const message = document.getElementById('challenge-text').textContent;
    say('Waiting for the wallet to sign the challenge with ' + account + '…');
    const signature = await window.ethereum.request({ method: 'personal_sign', params: [utf8Hex(message), account] });
    form.querySelector('[name="address"]').value = account;
    form.querySelector('[name="signature"]').value = signature;
    say('Signed; submitting…');
    form.submit();
  }

  function wire(id, handler) {
    const button = document.getElementById(id);
    if (!button) return;
    button.addEventListener('click', (event) => {
      event.preventDefault();
      handler(button).catch((err) => say((err && err.message) || String(err), true));
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    wire('wallet-sign', signTyped);
    wire('wallet-register', signMessage);
  });
}());
