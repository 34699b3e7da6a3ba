// Shortened wallets and hashes (0x1234ab…cd5678) keep their whole value in data-copy: a small button next to
// each copies it, so staff never retype or guess the hidden middle of an address.
'use strict';
(function () {
  function copy(button, value) {
    const done = () => {
      button.textContent = 'copied';
      button.title = 'Copied ' + value;
      setTimeout(() => { button.textContent = 'copy'; button.title = 'Copy ' + value; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(done, () => fallback(value, done));
    } else {
      fallback(value, done);
    }
  }

  // Plain http (development) has no Clipboard API: select a hidden field and use the older command.
  function fallback(value, done) {
    const area = document.createElement('textarea');
    area.value = value;
    area.setAttribute('readonly', '');
    area.style.position = 'fixed';
    area.style.opacity = '0';
    document.body.appendChild(area);
    area.select();
    try { document.execCommand('copy'); done(); } finally { area.remove(); }
  }

  document.addEventListener('DOMContentLoaded', () => {
    for (const el of document.querySelectorAll('[data-copy]')) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'copy-value';
      button.textContent = 'copy';
      button.title = 'Copy ' + el.dataset.copy;
      button.setAttribute('aria-label', 'Copy ' + el.dataset.copy);
      button.addEventListener('click', (event) => { event.preventDefault(); copy(button, el.dataset.copy); });
      el.after(button);
    }
  });
}());
