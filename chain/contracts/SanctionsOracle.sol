// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title SanctionsOracle
/// @notice A local stand-in for the Chainalysis sanctions oracle (0x40C57923924B5c5c5455c48D93317139ADDaC8fb on
///         Ethereum and BNB Chain): the same interface, so the back office reads this one on anvil exactly as it
///         reads the real one on a mainnet. The owner lists and delists addresses; anyone reads.
/// @dev Never deploy this where the real oracle exists: it lists only what its owner told it.
contract SanctionsOracle {
    address public owner;
    mapping(address => bool) private _sanctioned;

    event SanctionedAddressesAdded(address[] addrs);
    event SanctionedAddressesRemoved(address[] addrs);
    event SanctionedAddress(address indexed addr);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner(address caller);
    error ZeroOwner();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @param initial addresses listed from the start (the local deployment's demo wallets)
    constructor(address[] memory initial) {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
        if (initial.length > 0) _add(initial);
    }

    function name() external pure returns (string memory) {
        return "Chainalysis sanctions oracle";
    }

    function isSanctioned(address addr) external view returns (bool) {
        return _sanctioned[addr];
    }

    /// @notice isSanctioned, and an event for a listed address (the real oracle's verbose variant).
    function isSanctionedVerbose(address addr) external returns (bool) {
        if (_sanctioned[addr]) {
            emit SanctionedAddress(addr);
            return true;
        }
        return false;
    }

    function addToSanctionsList(address[] memory newSanctions) external onlyOwner {
        _add(newSanctions);
    }

    function removeFromSanctionsList(address[] memory removeSanctions) external onlyOwner {
        for (uint256 i = 0; i < removeSanctions.length; i++) {
            _sanctioned[removeSanctions[i]] = false;
        }
        emit SanctionedAddressesRemoved(removeSanctions);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroOwner();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function _add(address[] memory addrs) private {
        for (uint256 i = 0; i < addrs.length; i++) {
            _sanctioned[addrs[i]] = true;
        }
        emit SanctionedAddressesAdded(addrs);
    }
}
